#!/usr/bin/env python3
"""Regenerates the reference fixtures of megatron/core/datasets with megatron-core itself.

The fixtures pin our C++ datasets to Megatron's behaviour: the .bin/.idx files are written by megatron-core's
IndexedDatasetBuilder (our writer must reproduce them byte for byte), and gpt_reference.json holds the
document/sample/shuffle indices and the first samples that megatron-core's BlendedMegatronDatasetBuilder +
GPTDataset build from mcore_uint16 (our GPTDataset must reproduce them exactly: numpy's legacy RandomState is
MT19937 + masked rejection sampling, which C++ reproduces bit for bit).

Usage (megatron-core 0.16.1 was used; it needs torch and numpy):
    pip download megatron-core==0.16.1 --no-deps -d /tmp/mcore && (cd /tmp/mcore && unzip -q *.whl)
    PYTHONPATH=/tmp/mcore python3 megatron/core/datasets/testdata/make_fixtures.py
"""

import json
import os
import tempfile
import warnings

import numpy
import torch

warnings.filterwarnings("ignore")

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

HERE = os.path.dirname(os.path.abspath(__file__))
EOD = 0


def build_uint16():
    """40 documents of one sequence each (as preprocess_data writes them), EOD-terminated, 1..40 tokens."""
    rng = numpy.random.default_rng(7)
    docs = []
    for _ in range(40):
        length = int(rng.integers(1, 40))
        docs.append([int(t) for t in rng.integers(1, 65535, size=length)] + [EOD])
    prefix = os.path.join(HERE, "mcore_uint16")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=numpy.uint16)
    for doc in docs:
        builder.add_item(torch.IntTensor(doc))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix, [[d] for d in docs]


def build_int32_multi():
    """int32 tokens (beyond uint16), documents of 1-3 sequences, one empty sequence and one empty document."""
    rng = numpy.random.default_rng(11)
    docs = []
    for d in range(9):
        items = []
        for _ in range(int(rng.integers(1, 4))):
            items.append([int(t) for t in rng.integers(0, 200000, size=int(rng.integers(1, 12)))])
        docs.append(items)
    docs[3].insert(1, [])  # an empty sequence inside a document
    docs.insert(5, [])  # a document without sequences
    prefix = os.path.join(HERE, "mcore_int32_multi")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=numpy.int32)
    for doc in docs:
        for item in doc:
            builder.add_item(torch.IntTensor(item))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    return prefix, docs


class MockTokenizer:
    """The few attributes GPTDataset reads from a tokenizer."""

    vocab_size = 65535
    eod = EOD
    pad = -1  # no pad token: Megatron falls back to -1
    special_tokens_dict = {"eod_token": EOD}
    unique_identifiers = {"class": "MockTokenizer"}  # hashed into Megatron's cache description


def gpt_reference(prefix, name, seq_length, seed, split, sizes, **flags):
    with tempfile.TemporaryDirectory() as cache:
        config = GPTDatasetConfig(
            random_seed=seed,
            sequence_length=seq_length,
            blend=([prefix], None),
            split=split,
            path_to_cache=cache,
            tokenizer=MockTokenizer(),
            create_attention_mask=False,
            **flags,
        )
        datasets = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    out = {"name": name, "seq_length": seq_length, "seed": seed, "split": split, "sizes": sizes}
    out.update(flags)
    out["splits"] = []
    for ds in datasets:
        if ds is None:
            out["splits"].append(None)
            continue
        samples = []
        for i in list(range(min(len(ds), 6))) + [len(ds) - 1]:
            s = ds[i]
            samples.append(
                {
                    "index": i,
                    "tokens": s["tokens"].tolist(),
                    "labels": s["labels"].tolist(),
                    "loss_mask": s["loss_mask"].tolist(),
                    "position_ids": s["position_ids"].tolist(),
                }
            )
        out["splits"].append(
            {
                "documents": [int(ds.indices[0]), int(ds.indices[-1]) + 1],
                "size": len(ds),
                "document_index": ds.document_index.tolist(),
                "sample_index": ds.sample_index.reshape(-1).tolist(),
                "shuffle_index": ds.shuffle_index.tolist(),
                "samples": samples,
            }
        )
    return out


def main():
    prefix16, docs16 = build_uint16()
    prefix32, docs32 = build_int32_multi()
    for prefix, docs in ((prefix16, docs16), (prefix32, docs32)):
        ds = IndexedDataset(prefix)  # round trip through megatron-core's reader
        flat = [item for doc in docs for item in doc]
        assert len(ds) == len(flat)
        for i, item in enumerate(flat):
            assert ds[i].tolist() == item
    expected = {
        "mcore_uint16": {"dtype_code": 8, "documents": docs16},
        "mcore_int32_multi": {"dtype_code": 4, "documents": docs32},
    }
    with open(os.path.join(HERE, "indexed_expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))

    refs = [
        # One epoch per split (num_samples None), EOD loss masking: the plain Megatron setup.
        gpt_reference(prefix16, "one_epoch", 16, 1234, "8,1,1", [None, None, None],
                      reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=True),
        # Several epochs: train spans ~2.5 epochs (separately shuffled final epoch), valid keeps its partial
        # last sample. (Megatron loops forever on an empty split, e.g. "969,30,1" of 40 documents.)
        gpt_reference(prefix16, "multi_epoch", 8, 99, "90,5,5", [130, 9, 2],
                      reset_position_ids=True, reset_attention_mask=False, eod_mask_loss=False,
                      drop_last_partial_validation_sequence=False),
    ]
    with open(os.path.join(HERE, "gpt_reference.json"), "w") as f:
        json.dump(refs, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
