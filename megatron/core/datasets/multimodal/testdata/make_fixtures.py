#!/usr/bin/env python3
"""Fixtures for megatron/core/datasets/multimodal tests, from Python's tarfile and HuggingFace tokenizers /
transformers (references nobody here wrote).

  ustar.tar             tarfile USTAR_FORMAT archive of MEMBERS below (TarInfo defaults): SerializeTar must
                        produce these exact bytes
  pax.tar               tarfile's default (PAX) format: a directory, a 120-byte name (pax 'path' record), a
                        member in a subdirectory, an empty member
  gnu.tar               tarfile GNU_FORMAT, short names
  webdataset.tar        a shard as a Python WebDataset writer would make it (tarfile, PAX format): a JPEG caption
                        sample with an extra .txt member, a two-image PNG conversation, a text-only VQA sample;
                        webdataset.json holds the samples' decoded pixels' sums (PIL) for the image checks
  chat_tokenizer.json   a byte-level BPE trained by HF tokenizers with the chat special tokens
  chat.json             a conversation, its rendering by transformers' apply_chat_template with Qwen2's ChatML
                        template, HF's token ids for it, and the Megatron-rule target (loss on assistant turns
                        after the 3... prefix tokens, computed here per turn)
Run: python3 make_fixtures.py
"""
import io
import json
import os
import tarfile

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
MEMBERS = [("000001.png", b"\x89PNG fake image bytes"), ("000001.json", b'{"kind": "caption", "caption": "hi"}'),
           ("000002.json", b"x" * 512), ("000003.json", b"y" * 513), ("empty.json", b"")]

# Qwen2's ChatML template (the default part of Qwen2's tokenizer_config.json chat_template, without tools).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def write_tar(path, members, fmt, extra=()):
    with tarfile.open(path, "w", format=fmt) as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def main():
    write_tar(os.path.join(HERE, "ustar.tar"), MEMBERS, tarfile.USTAR_FORMAT)
    d = tarfile.TarInfo("somedir")
    d.type = tarfile.DIRTYPE
    long_name = "d" * 40 + "/" + "n" * 74 + ".json"  # 120 bytes: needs a pax header (or a ustar prefix)
    write_tar(os.path.join(HERE, "pax.tar"), [(long_name, b"long"), ("sub/a.json", b"{}"), ("e.json", b"")],
              tarfile.PAX_FORMAT, extra=[d])
    write_tar(os.path.join(HERE, "gnu.tar"), MEMBERS[:2], tarfile.GNU_FORMAT)

    from PIL import Image
    import numpy as np
    rng = np.random.RandomState(0)
    imgs = {n: rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8) for n, (h, w) in
            {"s0.jpg": (12, 20), "s1.0.png": (5, 7), "s1.1.png": (9, 4)}.items()}
    members, sums = [], {}
    for name in ["s0.jpg", "s0.json", "s0.txt", "s1.0.png", "s1.1.png", "s1.json", "s2.json"]:
        if name in imgs:
            buf = io.BytesIO()
            Image.fromarray(imgs[name]).save(buf, format="JPEG" if name.endswith("jpg") else "PNG", quality=95,
                                             subsampling=0)
            data = buf.getvalue()
            decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            sums[name] = {"shape": list(decoded.shape), "sum": int(decoded.astype(np.int64).sum())}
        elif name == "s0.json":
            data = json.dumps({"kind": "caption", "caption": "noise", "source": "fixture"}).encode()
        elif name == "s0.txt":
            data = b"ignored"
        elif name == "s1.json":
            data = json.dumps({"kind": "conversation", "conversations": [
                {"from": "human", "value": "<image>\n<image>\nSame?"}, {"from": "gpt", "value": "no"}]}).encode()
        else:
            data = json.dumps({"kind": "vqa", "question": "2+2?", "answer": "4"}).encode()
        members.append((name, data))
    write_tar(os.path.join(HERE, "webdataset.tar"), members, tarfile.PAX_FORMAT)
    json.dump(sums, open(os.path.join(HERE, "webdataset.json"), "w"), indent=1)

    corpus = ["Answer the questions.", "Describe the image.", "What colour is the circle?", "red", "blue",
              "a red circle at top left and a blue square at centre.", "user", "assistant", "system"] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(os.path.join(HERE, "chat_tokenizer.json"))

    hf = PreTrainedTokenizerFast(tokenizer_object=tok)
    hf.chat_template = CHATML
    messages = [{"role": "system", "content": "Answer the questions."},
                {"role": "user", "content": "<image>\nWhat colour is the circle?"},
                {"role": "assistant", "content": "red"},
                {"role": "user", "content": "And the square?"},
                {"role": "assistant", "content": "blue"}]
    text = hf.apply_chat_template(messages, tokenize=False)
    prompt = hf.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    ids = tok.encode(text).ids
    # Megatron's rule, per turn: untrained except assistant turns after the "<|im_start|>assistant\n" prefix.
    prefix_len = len(tok.encode("<|im_start|>assistant\n").ids)
    target = []
    for m in messages:
        turn = tok.encode(hf.apply_chat_template([m], tokenize=False)).ids
        for k, t in enumerate(turn):
            target.append(t if m["role"] == "assistant" and k >= prefix_len else -100)
    assert len(target) == len(ids)
    json.dump({"messages": messages, "text": text, "ids": ids, "target": target, "prompt": prompt,
               "prompt_ids": tok.encode(prompt).ids, "assistant_prefix_len": prefix_len},
              open(os.path.join(HERE, "chat.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
