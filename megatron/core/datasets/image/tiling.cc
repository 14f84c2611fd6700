#include "megatron/core/datasets/image/tiling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "c10/util/Exception.h"
#include "megatron/core/datasets/image/resize.h"

namespace megatron::datasets::image {

std::vector<TileGrid> CandidateGrids(int min_tiles, int max_tiles) {
  TORCH_CHECK(min_tiles >= 1 && max_tiles >= min_tiles, "CandidateGrids: need 1 <= min_tiles <= max_tiles, got ",
              min_tiles, " and ", max_tiles);
  std::vector<TileGrid> grids;
  for (int n = min_tiles; n <= max_tiles; ++n) {
    for (int cols = 1; cols <= n; ++cols) {
      if (n % cols == 0) grids.push_back({cols, n / cols});
    }
  }
  return grids;  // already by tile count, then cols
}

TileGrid FindClosestAspectRatio(int width, int height, const std::vector<TileGrid>& grids, int tile_size) {
  TORCH_CHECK(width > 0 && height > 0, "FindClosestAspectRatio: image ", width, "x", height, " must be non-empty");
  const double aspect_ratio = static_cast<double>(width) / height;
  const double area = static_cast<double>(width) * height;
  double best_diff = std::numeric_limits<double>::infinity();
  TileGrid best{1, 1};
  for (const TileGrid& g : grids) {
    const double diff = std::abs(aspect_ratio - static_cast<double>(g.cols) / g.rows);
    if (diff < best_diff) {
      best_diff = diff;
      best = g;
    } else if (diff == best_diff) {
      if (area > 0.5 * tile_size * tile_size * g.cols * g.rows) best = g;
    }
  }
  return best;
}

TileGrid ChooseGrid(int width, int height, const TilingConfig& config) {
  return FindClosestAspectRatio(width, height, CandidateGrids(config.min_tiles, config.max_tiles),
                                config.tile_size);
}

int NumTiles(int width, int height, const TilingConfig& config) {
  const int n = ChooseGrid(width, height, config).num_tiles();
  return n + (config.use_thumbnail && n > 1 ? 1 : 0);
}

std::vector<Image> DynamicPreprocess(const Image& image, const TilingConfig& config) {
  TORCH_CHECK(config.tile_size > 0, "DynamicPreprocess: tile_size must be positive, got ", config.tile_size);
  const TileGrid grid = ChooseGrid(image.width, image.height, config);
  const int s = config.tile_size;
  const Image resized = ResizeBicubic(image, s * grid.rows, s * grid.cols, config.pass_order);
  std::vector<Image> tiles;
  for (int i = 0; i < grid.num_tiles(); ++i) {
    // Upstream: box ((i % cols) * S, (i // cols) * S, ...), i.e. row-major over the grid.
    tiles.push_back(Crop(resized, (i / grid.cols) * s, (i % grid.cols) * s, s, s));
  }
  if (config.use_thumbnail && tiles.size() > 1) tiles.push_back(ResizeBicubic(image, s, s, config.pass_order));
  return tiles;
}

int DegradeMaxTiles(int max_tiles) {
  switch (max_tiles) {
    case 12: return 8;
    case 8: return 6;
    case 6: return 4;
    case 4: return 2;
    default: return 1;
  }
}

TilingConfig FitTileBudget(const std::vector<std::pair<int, int>>& image_sizes_wh, const TilingConfig& config,
                           int tokens_per_tile, int max_image_tokens) {
  TilingConfig c = config;
  while (true) {
    int64_t tiles = 0;
    for (const auto& [w, h] : image_sizes_wh) tiles += NumTiles(w, h, c);
    if (tiles * tokens_per_tile <= max_image_tokens || c.max_tiles <= 1) return c;
    c.max_tiles = DegradeMaxTiles(c.max_tiles);
    c.min_tiles = std::min(c.min_tiles, c.max_tiles);
  }
}

}  // namespace megatron::datasets::image
