#!/usr/bin/env python3
"""Writes the BERT and T5 HuggingFace parity fixtures in tests/hf_parity_bert_t5/testdata/ (see README.md).

  bert/: a tiny random BertForPreTraining (post-LN, token types, pooler, NSP head, tied MLM head with bias)
  t5/:   a tiny random T5ForConditionalGeneration (RMS norm, no biases, relative position bias, ReLU MLP,
         unscaled attention, tied output scaled by d_model^-0.5)
Each directory: config.json + model.safetensors (save_pretrained) and expected.safetensors (inputs, outputs,
fp64 outputs, losses and the gradient of every parameter). Deterministic on CPU; fp32, eager attention.

Run from anywhere:  python3 tests/hf_parity_bert_t5/make_fixtures.py
"""
import copy
import os
import sys

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import BertConfig, BertForPreTraining, T5Config, T5ForConditionalGeneration

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")
VOCAB = 101


def randomize_(model, seed):
    """Larger-than-default random parameters so that every parameter (biases, norm scales) matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if ("LayerNorm" in name or "layer_norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith("bias") and "relative_attention_bias" not in name:
                p.copy_(0.1 * r)
            else:
                p.copy_(0.2 * r)


def save_expected(out_dir, expected, model):
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        expected["grad." + pname] = p.grad.detach().float().contiguous()
    expected = {k: v.contiguous() for k, v in expected.items()}
    save_file(expected, os.path.join(out_dir, "expected.safetensors"),
              metadata={"generator": f"tests/hf_parity_bert_t5/make_fixtures.py torch={torch.__version__} "
                                     f"transformers={transformers.__version__}"})
    print(f"   parameters with grads: {len(list(model.named_parameters()))}")
    for pname, p in model.named_parameters():
        print(f"     {pname:60s} {list(p.shape)}")


def make_bert():
    out_dir = os.path.join(OUT, "bert")
    os.makedirs(out_dir, exist_ok=True)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=32, type_vocab_size=2,
                        layer_norm_eps=1e-12, pad_token_id=0)
    torch.manual_seed(0)
    model = BertForPreTraining._from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, 3)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)

    b, s = 2, 12
    g = torch.Generator().manual_seed(13)
    input_ids = torch.randint(1, VOCAB, (b, s), generator=g)
    attention_mask = torch.ones(b, s, dtype=torch.int64)
    attention_mask[1, 9:] = 0  # the second sample is padded after 9 tokens
    input_ids[1, 9:] = 0
    token_type_ids = torch.zeros(b, s, dtype=torch.int64)
    token_type_ids[0, 5:] = 1
    token_type_ids[1, 4:9] = 1
    # Masked-LM labels on a few positions (never on padding); -100 elsewhere.
    labels = torch.full((b, s), -100, dtype=torch.int64)
    for (i, j) in [(0, 1), (0, 4), (0, 7), (0, 11), (1, 2), (1, 3), (1, 8)]:
        labels[i, j] = int(torch.randint(0, VOCAB, (1,), generator=g))
    next_sentence_label = torch.tensor([0, 1])

    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    lm_logits = out.prediction_logits
    nsp_logits = out.seq_relationship_logits
    lm_loss = F.cross_entropy(lm_logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    nsp_loss = F.cross_entropy(nsp_logits, next_sentence_label)
    loss = lm_loss + nsp_loss
    # The same total as HF's own loss.
    hf = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=labels,
               next_sentence_label=next_sentence_label)
    assert torch.allclose(hf.loss, loss), (hf.loss, loss)
    loss.backward()

    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        out64 = model64(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    expected = {
        "input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
        "labels": labels, "next_sentence_label": next_sentence_label,
        "lm_logits": lm_logits.detach(), "nsp_logits": nsp_logits.detach(),
        "lm_logits_fp64": out64.prediction_logits, "nsp_logits_fp64": out64.seq_relationship_logits,
        "lm_loss": lm_loss.detach().reshape(()), "nsp_loss": nsp_loss.detach().reshape(()),
        "loss": loss.detach().reshape(()),
    }
    print(f"== bert: loss {loss.item():.6f} (lm {lm_loss.item():.6f}, nsp {nsp_loss.item():.6f})")
    save_expected(out_dir, expected, model)


def make_t5():
    out_dir = os.path.join(OUT, "t5")
    os.makedirs(out_dir, exist_ok=True)
    # 8 buckets with max distance 16: sequences of 12 reach the logarithmic buckets in both directions.
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      dropout_rate=0.0, layer_norm_epsilon=1e-6, feed_forward_proj="relu",
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration._from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, 4)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)

    b, se, sd = 2, 12, 9
    g = torch.Generator().manual_seed(14)
    encoder_input_ids = torch.randint(2, VOCAB, (b, se), generator=g)
    attention_mask = torch.ones(b, se, dtype=torch.int64)
    attention_mask[1, 8:] = 0
    encoder_input_ids[1, 8:] = 0
    labels = torch.randint(2, VOCAB, (b, sd), generator=g)
    labels[1, 7:] = -100  # the second target is shorter
    decoder_input_ids = model._shift_right(labels)  # decoder_start_token_id, then labels (-100 -> pad)

    model.zero_grad(set_to_none=True)
    out = model(input_ids=encoder_input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    logits = out.logits
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
    hf = model(input_ids=encoder_input_ids, attention_mask=attention_mask, labels=labels)
    assert torch.allclose(hf.loss, loss), (hf.loss, loss)
    loss.backward()
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        out64 = model64(input_ids=encoder_input_ids, attention_mask=attention_mask,
                        decoder_input_ids=decoder_input_ids)
    expected = {
        "encoder_input_ids": encoder_input_ids, "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids, "labels": labels,
        "logits": logits.detach(), "logits_fp64": out64.logits,
        "encoder_output": out.encoder_last_hidden_state.detach(),
        "loss": loss.detach().reshape(()),
    }
    print(f"== t5: loss {loss.item():.6f}")
    save_expected(out_dir, expected, model)


def main():
    torch.use_deterministic_algorithms(True)
    make_bert()
    make_t5()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"total fixture size: {total} bytes; torch {torch.__version__}, transformers {transformers.__version__}")
    assert total < 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
