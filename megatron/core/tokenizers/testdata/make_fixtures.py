#!/usr/bin/env python3
"""Writes the reference fixtures for bpe_tokenizer_test.cc with HuggingFace `tokenizers` (the reference).

    pip install tokenizers            # the fixtures record the version they were made with
    python3 megatron/core/tokenizers/testdata/make_fixtures.py
        -> train_text.txt        training corpus in fortune format ('%' lines separate documents); made once from
                                 Debian's `fortunes` package plus multilingual lines below, then kept as is
        -> hf_tokenizer.json     HF ByteLevel BPE trained on it (vocab 500, <|endoftext|>) plus two added tokens
        -> hf_encodings.json     HF's ids and decode for tricky strings, the training documents and held-out text;
                                 HF's decode of hand-made id lists (ill-formed UTF-8, unknown ids, added tokens)
        -> hf_char_classes.json  how HF's pre-tokenizer classifies every code point (letter/number/whitespace),
                                 probed through ByteLevel.pre_tokenize_str, as code-point ranges

    python3 megatron/core/tokenizers/testdata/make_fixtures.py --check_ours PATH
        PATH is a tokenizer.json written by OUR trainer on train_text.txt with the settings the C++ test uses
        (vocab 500, min_frequency 2, <|endoftext|>, documents split as split_fortune() does). The test leaves
        exactly that file in its undeclared outputs:
          bazel test //megatron/core/tokenizers:bpe_tokenizer_test   # fails on merges if training changed
          unzip -o bazel-testlogs/megatron/core/tokenizers/bpe_tokenizer_test/test.outputs/outputs.zip \
              ours_tokenizer.json -d /tmp && \
          python3 megatron/core/tokenizers/testdata/make_fixtures.py --check_ours /tmp/ours_tokenizer.json
        Loads it with HF (which must accept it), checks HF's round trip of every case, and writes
        -> ours_encodings.json   our merges and HF's ids/decodes with our tokenizer; the C++ test retrains, must get
                                 the same merges, and must encode every case as HF does with our file.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FORTUNES = "/usr/share/games/fortunes"
VOCAB_SIZE = 500
SPECIAL = "<|endoftext|>"
EXTRA_SPECIAL = "<|fim_middle|>"  # added after training: a special token that is not in the trained vocab
EXTRA_ADDED = "<custom sep>"      # a normalized (non-special) added token whose text has a space

MULTILINGUAL = [
    "Le café est très bon, n'est-ce pas ? Ça dépend du garçon.",
    "Über die Brücke gehen fünf Bären; naïve Grüße aus Köln.",
    "Η ελληνική γλώσσα είναι πολύ όμορφη. Καλημέρα κόσμε!",
    "Русский текст: съешь же ещё этих мягких французских булок.",
    "中文字符测试：我们今天去公园散步。日本語のテキストも少し。",
    "한국어 문장도 조금 있습니다.",
    "Emoji time 😀👍🏽 and a family 👨‍👩‍👧 with some ✨ sparkle.",
    "Numbers 3.14159, 1,000,000 and ½ of ²; ٣٤٥ and Ⅻ.",
    "Tabs\tand\tnewlines\n\nand   runs   of spaces   here.",
]

CASES = [
    "", "hello", "Hello world", "It's", "don't you're we've I'm you'll he'd", "IT'S DON'T", "'S 'T 'Re",
    "''s", "rock 'n' roll", "' s", "'", "'ll'll", "O'Neil's dogs'", " 's", "x's", "'d've",
    "1234567890", "3.14159", "1,000,000", "x2 2x", "٣٤٥", "Ⅻ", "½", "x²", "2023-01-01T10:00:00Z",
    "!!!???...", "a--b", "(foo)[bar]{baz}", "@#$%^&*", "...hello...", "--- ---", "a.b,c;d:e",
    "a  b", "a   b", "a    ", "   a", "  ", " ", "trailing ", "\t", "a\tb", "a\t\tb", "\n", "\n\n", "a\n\nb",
    " \n ", "a \n b", "line1\r\nline2", "\u000b\u000c", "x \t y", "  \n\n  x", "end\n",
    "café", "naïve über", "Ελληνικά γλώσσα", "中文字符测试", "日本語のテキスト", "Русский текст", "한국어",
    "emoji 😀👍🏽", "family 👨‍👩‍👧", "e\u0301", "a\u0300\u0301b", "NBSP\u00a0here", "ideographic\u3000space",
    "line\u2028sep", "para\u2029sep", "\u0085nel", "zero\u200bwidth", "narrow\u202fnbsp", "x\u00a0\u00a0y",
    "\u3000\u3000a", " \u00a0x", "ogham\u1680mark", "\u2000\u200a\u205f",
    "\U0001fae8 shaking", "\u1c89new letter", "cjk \U00031350 ext h", "\U000e0001 tag",
    "\x00\x01\x1f\x7f", "a\x1cb\x1dc", "\ufeffbom", "\ufffd replacement",
    SPECIAL, "hello" + SPECIAL + "world", "hello " + SPECIAL + " world", SPECIAL + SPECIAL, "<|endoftext|",
    SPECIAL + "\n\n", "a" + EXTRA_SPECIAL + "b", "x " + EXTRA_ADDED + " y", EXTRA_ADDED + SPECIAL,
    "<|endoftext|><|endoftext|", "<custom  sep>",
    "a" * 300, "ab" * 200, "supercalifragilisticexpialidocious " * 5, "The " * 50,
]


def read_fortune_docs(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return split_fortune(text)


def split_fortune(text):
    docs, cur = [], []
    for line in text.split("\n"):
        if line == "%":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return [d for d in docs if d]


def ensure_train_text():
    path = os.path.join(HERE, "train_text.txt")
    if os.path.exists(path):
        return path
    docs = read_fortune_docs(os.path.join(FORTUNES, "fortunes"))
    picked, size = [], 0
    for d in docs:
        if size > 30000:
            break
        picked.append(d)
        size += len(d.encode()) + 3
    picked.extend(MULTILINGUAL)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n%\n".join(picked) + "\n")
    return path


def heldout_docs():
    path = os.path.join(HERE, "heldout_text.txt")
    if not os.path.exists(path):
        docs = read_fortune_docs(os.path.join(FORTUNES, "science"))[:12]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n%\n".join(docs) + "\n")
    with open(path, encoding="utf-8") as f:
        return split_fortune(f.read())


def train_docs():
    with open(ensure_train_text(), encoding="utf-8") as f:
        return split_fortune(f.read())


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def encode_cases(tok, texts):
    """HF's ids and decode for each text; "decoded" is left out where it equals the text (keeps files small)."""
    out = []
    for t in texts:
        ids = tok.encode(t).ids
        case = {"text": t, "ids": ids}
        decoded = tok.decode(ids, skip_special_tokens=False)
        if decoded != t:
            case["decoded"] = decoded
        out.append(case)
    return out


def fixture_texts():
    # Every third training document is plenty to exercise the merges on real text.
    return CASES + heldout_docs() + train_docs()[::3]


def probe_char_classes():
    """Which code points HF's GPT-2 regex treats as \\p{L}, \\p{N}, \\s, as ranges (takes ~15 s)."""
    from tokenizers import pre_tokenizers
    pt = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    classes = {"letter": [], "number": [], "whitespace": []}

    def add(name, cp):
        rs = classes[name]
        if rs and rs[-1][1] == cp - 1:
            rs[-1][1] = cp
        else:
            rs.append([cp, cp])

    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if len(pt.pre_tokenize_str("a" + c)) == 1:  # joins a letter run
            add("letter", cp)
        elif len(pt.pre_tokenize_str("1" + c)) == 1:  # joins a number run
            add("number", cp)
        elif len(pt.pre_tokenize_str("!" + c)) == 2:  # neither letter, number nor "other": \s
            add("whitespace", cp)
    return classes


def make_hf_fixtures():
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    docs = train_docs()
    tok.train_from_iterator(docs, trainer)
    tok.add_special_tokens([EXTRA_SPECIAL])
    tok.add_tokens([EXTRA_ADDED])
    tok.save(os.path.join(HERE, "hf_tokenizer.json"))

    b2u = bytes_to_unicode()
    vocab = tok.get_vocab()

    def byte_ids(bs):
        return [vocab[b2u[b]] for b in bs]

    decode_inputs = [byte_ids(b) for b in (
        b"\xe2\x82", b"\xf0\x80", b"a\xe2\x82b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82\xac",
        b"\xf0\x9f\x98", b"\xff\xfe", b"\xe9", b"\xf0\x9f\x98\x80\xf0", b"\x80\x80abc")]
    decode_inputs += [
        [vocab[SPECIAL], 999999, vocab[b2u[ord("x")]]],
        [tok.token_to_id(EXTRA_SPECIAL), tok.token_to_id(EXTRA_ADDED), tok.token_to_id(SPECIAL)],
        [],
    ]
    fixture = {
        "tokenizers_version": tokenizers.__version__,
        "cases": encode_cases(tok, fixture_texts()),
        "decode_cases": [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)} for ids in decode_inputs],
    }
    with open(os.path.join(HERE, "hf_encodings.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=True, separators=(",", ":"))
    classes = probe_char_classes()
    classes["tokenizers_version"] = tokenizers.__version__
    with open(os.path.join(HERE, "hf_char_classes.json"), "w", encoding="utf-8") as f:
        json.dump(classes, f, separators=(",", ":"))
    print(f"tokenizers {tokenizers.__version__}: {len(fixture['cases'])} cases, vocab {tok.get_vocab_size()}")


def check_ours(path):
    import tokenizers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)  # must load: this is the "HF accepts our file" check
    with open(path, encoding="utf-8") as f:
        ours = json.load(f)
    merges = [m.split(" ") if isinstance(m, str) else m for m in ours["model"]["merges"]]
    cases = encode_cases(tok, fixture_texts())
    bad = 0
    for c in cases:
        if c.get("decoded", c["text"]) != c["text"]:
            bad += 1
            print(f"round trip differs: {c['text']!r} -> {c.get('decoded')!r}", file=sys.stderr)
    fixture = {"tokenizers_version": tokenizers.__version__, "vocab_size": tok.get_vocab_size(),
               "merges": merges, "cases": cases}
    with open(os.path.join(HERE, "ours_encodings.json"), "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=True, separators=(",", ":"))
    print(f"HF {tokenizers.__version__} loaded {path}: vocab {tok.get_vocab_size()}, {len(merges)} merges, "
          f"{len(cases)} cases, {bad} round-trip failures")
    return 1 if bad else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check_ours", metavar="PATH", help="tokenizer.json written by our trainer")
    args = parser.parse_args()
    if args.check_ours:
        sys.exit(check_ours(args.check_ours))
    make_hf_fixtures()


if __name__ == "__main__":
    main()
