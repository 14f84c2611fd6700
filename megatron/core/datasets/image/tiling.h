// Dynamic tiling (InternVL's dynamic_preprocess, used by Megatron's examples/multimodal image_processing.py;
// research notes §4.8) and the tile budget of the task encoder (§4.7), as pure functions.
//
//   1. Candidate grids: every (cols, rows) with min_tiles <= cols * rows <= max_tiles, ordered by tile count.
//   2. FindClosestAspectRatio: the grid minimising |W/H - cols/rows|; on an exact tie with the best so far, the
//      later grid wins if the image area W*H > 0.5 * S^2 * cols * rows (a big image may use more tiles).
//   3. Resize the image (PIL bicubic) to (S*cols) x (S*rows) and cut cols*rows tiles of S x S, row-major.
//   4. With use_thumbnail and more than one tile, append the whole image resized to S x S as the last tile.
//
// Note [tiling tie order]: upstream builds the candidates as a Python *set* sorted by tile count, so grids with
// the same tile count come in set-hash order. That order could matter only if two grids of equal tile count
// tied exactly as the best (W/H the mean of their ratios) and the area rule fired; we order equal counts by
// cols ascending instead. image_test.cc checks 5040 (W, H, max_tiles) cases against upstream's code run in
// Python; the fixture script flags cases where the order changes the answer, and found none.
#pragma once

#include <vector>

#include "megatron/core/datasets/image/image.h"
#include "megatron/core/datasets/image/resize.h"

namespace megatron::datasets::image {

struct TileGrid {
  int cols = 1;  // tiles across the width (InternVL's ratio[0])
  int rows = 1;  // tiles down the height (ratio[1])
  int num_tiles() const { return cols * rows; }
  bool operator==(const TileGrid& o) const { return cols == o.cols && rows == o.rows; }
};

struct TilingConfig {
  int tile_size = 448;  // S
  int min_tiles = 1;
  int max_tiles = 12;
  bool use_thumbnail = true;
  PassOrder pass_order = PassOrder::kAuto;  // resize.h
};

// All grids with min_tiles <= cols*rows <= max_tiles, by tile count then cols (Note [tiling tie order]).
std::vector<TileGrid> CandidateGrids(int min_tiles, int max_tiles);

// The grid for a width x height image (step 2).
TileGrid FindClosestAspectRatio(int width, int height, const std::vector<TileGrid>& grids, int tile_size);

// The grid the config picks for a width x height image.
TileGrid ChooseGrid(int width, int height, const TilingConfig& config);

// Tiles an image yields: cols*rows, plus one thumbnail when use_thumbnail and cols*rows > 1.
int NumTiles(int width, int height, const TilingConfig& config);

// Steps 1-4: the tiles (each tile_size x tile_size), thumbnail last.
std::vector<Image> DynamicPreprocess(const Image& image, const TilingConfig& config);

// Megatron's degradation of the tile budget when images do not fit the sequence: 12->8, 8->6, 6->4, 4->2,
// 2->1; anything else -> 1 (the smallest budget).
int DegradeMaxTiles(int max_tiles);

// The largest budget on the degradation path from config.max_tiles for which all images fit:
// sum(tiles) * tokens_per_tile <= max_image_tokens (Megatron: decoder_seq_length - text tokens - 4).
// Returns the config with max_tiles (and min_tiles, if above it) lowered; at 1 tile per image it stops even if
// the images still do not fit (the model then truncates the sequence).
TilingConfig FitTileBudget(const std::vector<std::pair<int, int>>& image_sizes_wh, const TilingConfig& config,
                           int tokens_per_tile, int max_image_tokens);

}  // namespace megatron::datasets::image
