#!/usr/bin/env python3
"""Fixtures for megatron/core/datasets/image tests, from Pillow and HuggingFace transformers (nobody here wrote them).

Writes (all small):
  *.png / photo.jpg           source images (odd, non-square sizes; random noise plus gradients, the hard case)
  <name>.decoded.u8           PIL's decode of the image (RGB, HWC uint8), for the JPEG decode comparison
  <name>.resize_HxW.u8        PIL Image.resize((W, H), BICUBIC), HWC uint8
  <name>.clip.f32 / .siglip.f32   CLIPImageProcessorPil / SiglipImageProcessorPil pixel_values[0], CHW float32
  <name>.tiles.u8             upstream dynamic_preprocess tiles (S=8, max 6, thumbnail), concatenated HWC uint8
  expected.json               shapes for all of the above, processor settings, and the tiling sweep
Run from anywhere: python3 make_fixtures.py (needs numpy, Pillow, transformers).
"""
import json
import os

import numpy as np
from PIL import Image
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))


def pillow_order(img, w, h):
    """Which pass Pillow ran first for img.resize((w, h), BICUBIC), told apart with Pillow's own single-axis
    resizes (each of those is unambiguous): "h", "v", or "either" when both orders give the same bytes."""
    ref = np.asarray(img.resize((w, h), Image.BICUBIC))
    hv = np.asarray(img.resize((w, img.height), Image.BICUBIC).resize((w, h), Image.BICUBIC))
    vh = np.asarray(img.resize((img.width, h), Image.BICUBIC).resize((w, h), Image.BICUBIC))
    ok_h, ok_v = np.array_equal(ref, hv), np.array_equal(ref, vh)
    assert ok_h or ok_v, "Pillow's resize is neither pass order"
    return "either" if ok_h and ok_v else ("h" if ok_h else "v")


def clip_resize_size(h, w, edge):
    if w <= h:
        return int(edge * h / w), edge
    return edge, int(edge * w / h)


def make_image(h, w, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 0 * x], axis=-1)
    noise = rng.randint(-60, 61, size=(h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# InternVL's dynamic_preprocess as used by Megatron examples/multimodal/image_processing.py (verbatim logic).
def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def target_ratios_upstream(min_num, max_num):
    target_ratios = set((i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                        if i * j <= max_num and i * j >= min_num)
    return sorted(target_ratios, key=lambda x: x[0] * x[1])


def dynamic_preprocess(image, min_num=1, max_num=6, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = target_ratios_upstream(min_num, max_num)
    target_aspect_ratio = find_closest_aspect_ratio(aspect_ratio, target_ratios, orig_width, orig_height, image_size)
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = ((i % (target_width // image_size)) * image_size, (i // (target_width // image_size)) * image_size,
               ((i % (target_width // image_size)) + 1) * image_size,
               ((i // (target_width // image_size)) + 1) * image_size)
        processed_images.append(resized_img.crop(box))
    if use_thumbnail and len(processed_images) != 1:
        processed_images.append(image.resize((image_size, image_size)))
    return processed_images


def main():
    expected = {"images": {}}
    sources = {"noise_17x23": (17, 23, 1), "noise_40x31": (40, 31, 2), "noise_9x13": (9, 13, 3)}
    clip = CLIPImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16})
    siglip = SiglipImageProcessorPil(size={"height": 18, "width": 18})
    resize_targets = [(11, 29), (40, 16), (7, 7), (33, 47)]
    for name, (h, w, seed) in sources.items():
        Image.fromarray(make_image(h, w, seed)).save(os.path.join(HERE, name + ".png"))
    Image.fromarray(make_image(24, 36, 4)).save(os.path.join(HERE, "photo.jpg"), quality=90, subsampling=0)
    for name in list(sources) + ["photo"]:
        file = name + (".jpg" if name == "photo" else ".png")
        img = Image.open(os.path.join(HERE, file)).convert("RGB")
        entry = {"file": file, "height": img.height, "width": img.width}
        np.asarray(img).tofile(os.path.join(HERE, name + ".decoded.u8"))
        entry["resizes"] = []
        for th, tw in resize_targets:
            np.asarray(img.resize((tw, th), Image.BICUBIC)).tofile(os.path.join(HERE, f"{name}.resize_{th}x{tw}.u8"))
            entry["resizes"].append([th, tw, pillow_order(img, tw, th)])
        c = clip(img, return_tensors="np")["pixel_values"][0].astype(np.float32)
        c.tofile(os.path.join(HERE, name + ".clip.f32"))
        s = siglip(img, return_tensors="np")["pixel_values"][0].astype(np.float32)
        s.tofile(os.path.join(HERE, name + ".siglip.f32"))
        ch, cw = clip_resize_size(img.height, img.width, 20)
        entry["clip_order"] = pillow_order(img, cw, ch)
        entry["siglip_order"] = pillow_order(img, 18, 18)
        entry["clip_shape"] = list(c.shape)
        entry["siglip_shape"] = list(s.shape)
        tiles = dynamic_preprocess(img, 1, 6, 8, True)
        np.concatenate([np.asarray(t).reshape(-1) for t in tiles]).tofile(os.path.join(HERE, name + ".tiles.u8"))
        entry["num_tiles"] = len(tiles)
        ratios = target_ratios_upstream(1, 6)
        g = find_closest_aspect_ratio(img.width / img.height, ratios, img.width, img.height, 8)
        entry["tiles_orders"] = [pillow_order(img, 8 * g[0], 8 * g[1]), pillow_order(img, 8, 8)]
        expected["images"][name] = entry
    expected["clip"] = {"shortest_edge": 20, "crop": 16}
    expected["siglip"] = {"size": 18}
    expected["tiles"] = {"tile_size": 8, "min": 1, "max": 6, "thumbnail": True}

    # Tiling sweep: upstream's grid for many (W, H) and budgets. "order_dependent" marks the cases where the
    # choice depends on how grids with equal tile count are ordered (Note [tiling tie order] in tiling.h):
    # rerun with our order (tile count, then cols) and record both.
    sweep = []
    sizes = list(range(20, 1500, 67)) + [448, 500, 896, 1000, 1344]
    for max_num in (1, 2, 4, 6, 8, 12):
        ours_order = sorted(target_ratios_upstream(1, max_num), key=lambda r: (r[0] * r[1], r[0]))
        for w in sizes:
            for h in sizes + [400, 800]:
                up = find_closest_aspect_ratio(w / h, target_ratios_upstream(1, max_num), w, h, 448)
                ours = find_closest_aspect_ratio(w / h, ours_order, w, h, 448)
                sweep.append([w, h, max_num, up[0], up[1], int(up != ours)])
    expected["sweep_tile_size"] = 448
    expected["sweep"] = sweep
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
    print("order-dependent sweep cases:", sum(s[5] for s in sweep), "of", len(sweep))


if __name__ == "__main__":
    main()
