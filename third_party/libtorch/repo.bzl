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
    rctx.symlink(root.get_child("include"), "include")
    rctx.symlink(root.get_child("lib"), "lib")
    rctx.file("WORKSPACE", 'workspace(name = "libtorch")\n')
    rctx.template("BUILD", Label("//third_party/libtorch:libtorch.BUILD.tpl"), {})

libtorch_repository = repository_rule(
    implementation = _libtorch_repository_impl,
    environ = ["LIBTORCH_PATH"],
    local = True,
)
