"""Repository rule that wraps an unpacked libtorch (include/ + lib/) without downloading anything."""

_MISSING = """libtorch not found at {path}.
Run tools/setup.sh (it unpacks the PyPI torch==2.11.0 wheel into .deps/libtorch/torch),
or point LIBTORCH_PATH at a directory holding libtorch's include/ and lib/."""

def _libtorch_repository_impl(rctx):
    path = rctx.os.environ.get("LIBTORCH_PATH", "")
    if not path:
        workspace_root = rctx.path(Label("//:WORKSPACE")).dirname
        path = "%s/.deps/libtorch/torch" % workspace_root
    root = rctx.path(path)
    if not root.get_child("include").get_child("ATen").exists or not root.get_child("lib").exists:
        fail(_MISSING.format(path = path))
    # libtorch ships headers of its own (older) protobuf under include/google; they would shadow Debian's
    # protobuf that our protos are generated against, so every top-level include entry but that is linked.
    for entry in root.get_child("include").readdir():
        if entry.basename != "google":
            rctx.symlink(entry, "include/" + entry.basename)
    rctx.symlink(root.get_child("lib"), "lib")
    rctx.file("WORKSPACE", 'workspace(name = "libtorch")\n')
    rctx.template("BUILD", Label("//third_party/libtorch:libtorch.BUILD.tpl"), {})

libtorch_repository = repository_rule(
    implementation = _libtorch_repository_impl,
    environ = ["LIBTORCH_PATH"],
    local = True,
)
