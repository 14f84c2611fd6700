"""Tests of track.py on real Google Benchmark output (baselines/h100/norm_benchmark.json, written by the library on
the H100) and on runs derived from it: parsing, medians and spread, the noise-aware verdicts, baseline update and
the chart."""
import copy
import json
import os
import tempfile
import unittest

import track

HERE = os.path.dirname(os.path.abspath(__file__))
GBENCH = os.path.join(HERE, "baselines", "h100", "norm_benchmark.json")


def load():
    with open(GBENCH) as f:
        return json.load(f)


def repeated(gbench, factors):
    """The same benchmarks as len(factors) repetitions, each time scaled by its factor."""
    out = copy.deepcopy(gbench)
    out["benchmarks"] = []
    for i, factor in enumerate(factors):
        for b in gbench["benchmarks"]:
            r = dict(b, repetition_index=i, real_time=b["real_time"] * factor)
            out["benchmarks"].append(r)
    return out


class TrackTest(unittest.TestCase):
    def test_parses_google_benchmark_json(self):
        results = {}
        track.collect(load(), "norm_benchmark", results)
        name = "fused/RMSNorm/forward/bf16/16384x4096"
        self.assertIn(name, results)
        self.assertAlmostEqual(results[name]["median_us"], 109.75566189951381)
        self.assertAlmostEqual(results[name]["frac_of_d2d_median"], 0.8802096979921209)
        self.assertEqual(results[name]["suite"], "norm_benchmark")
        self.assertEqual(len(results), len(load()["benchmarks"]))

    def test_median_and_spread_over_repetitions(self):
        results = {}
        track.collect(repeated(load(), [1.0, 1.1, 0.9, 1.0, 5.0]), "s", results)
        entry = results["fused/RMSNorm/forward/bf16/16384x4096"]
        self.assertAlmostEqual(entry["median_us"], 109.75566189951381)  # the outlier does not move the median
        self.assertAlmostEqual(entry["spread"], 0.1, places=6)  # IQR (1.1 - 1.0) / 1.0 of the factors

    def test_verdicts_are_noise_aware(self):
        base, quiet_slow, noisy_slow = {}, {}, {}
        track.collect(repeated(load(), [1.0, 1.0, 1.0]), "s", base)
        track.collect(repeated(load(), [1.2, 1.2, 1.2]), "s", quiet_slow)
        track.collect(repeated(load(), [0.9, 1.2, 1.8]), "s", noisy_slow)
        verdicts = {r[1] for r in track.compare(quiet_slow, base, 0.05, 3.0)}
        self.assertEqual(verdicts, {"regression"})
        # +20% median but a 75% IQR: within 3 x the noise, not flagged.
        self.assertEqual({r[1] for r in track.compare(noisy_slow, base, 0.05, 3.0)}, {"same"})
        faster = {}
        track.collect(repeated(load(), [0.8, 0.8, 0.8]), "s", faster)
        self.assertEqual({r[1] for r in track.compare(faster, base, 0.05, 3.0)}, {"improvement"})
        missing = dict(base)
        del missing["fused/RMSNorm/forward/bf16/16384x4096"]
        verdicts = {r[0]: r[1] for r in track.compare(missing, base, 0.05, 3.0)}
        self.assertEqual(verdicts["fused/RMSNorm/forward/bf16/16384x4096"], "missing")

    def test_update_baseline_then_compare_and_chart(self):
        with tempfile.TemporaryDirectory() as tmp:
            slow = os.path.join(tmp, "slow.json")
            with open(slow, "w") as f:
                json.dump(repeated(load(), [1.3, 1.3, 1.3]), f)
            fast = os.path.join(tmp, "fast.json")
            with open(fast, "w") as f:
                json.dump(repeated(load(), [1.0, 1.0, 1.0]), f)
            baseline = os.path.join(tmp, "h100.json")
            chart = os.path.join(tmp, "frac.svg")
            out = os.path.join(tmp, "run.json")
            self.assertEqual(track.main(["--from_json", fast, "--baseline", baseline, "--update_baseline",
                                         "--commit", "abc"]), 0)
            with open(baseline) as f:
                self.assertEqual(json.load(f)["stamp"]["commit"], "abc")
            self.assertEqual(track.main(["--from_json", slow, "--baseline", baseline, "--chart", chart,
                                         "--out", out, "--commit", "def"]), 1)
            self.assertEqual(track.main(["--from_json", slow, "--baseline", baseline, "--no_fail"]), 0)
            with open(chart) as f:
                svg = f.read()
            self.assertIn("fused/RMSNorm/forward/bf16/16384x4096", svg)
            self.assertIn("<svg", svg)
            with open(out) as f:
                run = json.load(f)
            self.assertEqual(run["stamp"]["commit"], "def")
            with open(baseline) as f:  # not changed without --update_baseline
                self.assertEqual(json.load(f)["stamp"]["commit"], "abc")
            # A stored run (--out) compares like fresh results.
            self.assertEqual(track.main(["--from_json", out, "--baseline", baseline]), 1)


if __name__ == "__main__":
    unittest.main()
