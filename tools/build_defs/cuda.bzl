"""cuda_library: compiles .cu files with nvcc for Hopper (sm_90) into a cc_library.

The objects are position independent so they can link into shared test binaries. Device code sees only the
repository root and CUDA's headers on its include path: keep libtorch out of .cu files and put the ATen glue
in a .cc beside them (it compiles with the host compiler, which is much faster on libtorch headers).

Targets are tagged "cuda": the default (CPU) configuration filters them out, --config=cuda builds them.
"""

NVCC_FLAGS = [
    "-std=c++17",
    "-O3",
    # H100 / H200. SASS only: there is no other GPU we run on, and PTX JIT would hide a missing arch.
    "-gencode=arch=compute_90,code=sm_90",
    "-Xcompiler=-fPIC",
    "--expt-relaxed-constexpr",
    "-lineinfo",
]

def cuda_library(name, srcs, hdrs = [], deps = [], nvcc_flags = [], visibility = None, tags = [], cuda_hdrs = []):
    """cuda_hdrs: labels of headers from other packages that the .cu files include (e.g.
    //megatron/core/fusions/common:device_utils_hdrs); nvcc runs in a genrule, which sees only what it is given."""
    objects = []
    for src in srcs:
        obj = "_objs_cuda/%s/%s.pic.o" % (name, src.rsplit(".", 1)[0])
        native.genrule(
            name = "%s_%s_nvcc" % (name, src.replace("/", "_").replace(".", "_")),
            # Headers of the package (declared or not) are visible to nvcc; dedupe against srcs/hdrs.
            srcs = [src] + hdrs + cuda_hdrs + [h for h in native.glob(["**/*.h", "**/*.cuh"]) if h not in hdrs and h != src],
            outs = [obj],
            tools = ["@local_cuda//:nvcc"],
            cmd = "$(location @local_cuda//:nvcc) -c %s -I. -I$(GENDIR) -o $@ $(location %s)" % (
                " ".join(NVCC_FLAGS + nvcc_flags),
                src,
            ),
            tags = ["cuda"] + tags,
        )
        objects.append(obj)
    native.cc_library(
        name = name,
        srcs = objects,
        hdrs = hdrs,
        deps = deps + ["//third_party/cuda:cudart"],
        visibility = visibility,
        tags = ["cuda"] + tags,
    )
