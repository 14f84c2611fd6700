"""proto_cc_library: C++ code from .proto files with Debian's protoc (Bazel 4 offline has no proto rules).

Generated headers sit at the same path as the .proto, so `#include "pkg/foo.pb.h"` works.
"""

def proto_cc_library(name, srcs, deps = [], proto_deps = [], visibility = None):
    """srcs: .proto files of this package; proto_deps: filegroups of .proto files they import."""
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
    native.genrule(
        name = name + "_protoc",
        srcs = srcs + proto_deps,
        outs = outs,
        tools = ["//third_party/system:protoc"],
        cmd = "$(location //third_party/system:protoc) --proto_path=. --cpp_out=$(GENDIR) " +
              " ".join(["$(location %s)" % s for s in srcs]),
    )
    native.filegroup(name = name + "_files", srcs = srcs, visibility = visibility)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h")],
        deps = deps + ["//third_party/system:protobuf"],
        visibility = visibility,
    )
