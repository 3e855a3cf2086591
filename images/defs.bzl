"""Hermetic OCI images without a container engine.

debian_rootfs: the base layer, mmdebstrap of pinned Debian packages (needs the mirror).
oci_image: base layers + a layer of third-party wheels + a layer of project code, taken
from the runfiles of Python targets. With an oci_image as `base`, only the files the base
does not already hold are added, so an image can be built on another image's layers.
Outputs: NAME.oci (OCI image layout), NAME.tar (docker-archive), NAME.digest.
"""

# Every timestamp in every layer and config: builds are bit-for-bit reproducible.
SOURCE_DATE_EPOCH = 0

ImageInfo = provider(
    doc = "Layers and Python payload of an image, for images built on top of it.",
    fields = {
        "layers": "list of struct(descriptor = File, blob = File), bottom first",
        "files": "depset of the runfiles already in the image",
        "imports": "depset of runfiles-relative sys.path entries",
    },
)

def _debian_rootfs_impl(ctx):
    blob = ctx.actions.declare_file(ctx.label.name + ".tar.gz")
    descriptor = ctx.actions.declare_file(ctx.label.name + ".json")
    packages = ctx.actions.declare_file(ctx.label.name + ".packages.txt")
    args = ctx.actions.args()
    args.add("--suite", ctx.attr.suite)
    args.add_all(ctx.attr.sources, before_each = "--source")
    args.add_all(ctx.attr.packages, before_each = "--include")
    args.add("--mtime", SOURCE_DATE_EPOCH)
    args.add("--blob", blob)
    args.add("--descriptor", descriptor)
    args.add("--packages", packages)
    ctx.actions.run(
        executable = ctx.executable._tool,
        arguments = [args],
        outputs = [blob, descriptor, packages],
        mnemonic = "DebianRootfs",
        progress_message = "mmdebstrap %s: %s" % (ctx.attr.suite, " ".join(ctx.attr.packages)),
        # mmdebstrap downloads from the Debian mirror and runs as root (chroot, mknod).
        execution_requirements = {"no-sandbox": "1", "requires-network": "1", "no-remote": "1"},
        use_default_shell_env = True,
    )
    return [
        DefaultInfo(
            files = depset([blob, descriptor, packages]),
            runfiles = ctx.runfiles([blob, descriptor, packages]),
        ),
        ImageInfo(
            layers = [struct(descriptor = descriptor, blob = blob)],
            files = depset(),
            imports = depset(),
        ),
    ]

debian_rootfs = rule(
    implementation = _debian_rootfs_impl,
    attrs = {
        "suite": attr.string(mandatory = True),
        "sources": attr.string_list(mandatory = True, doc = "apt sources lines"),
        "packages": attr.string_list(mandatory = True),
        "_tool": attr.label(default = "//images/tools:rootfs", executable = True, cfg = "exec"),
    },
)

def _image_path(ctx, f):
    # The runfiles layout under /app: /app/<workspace>/<path>, /app/<external repo>/<path>.
    if f.short_path.startswith("../"):
        return "app/" + f.short_path[3:]
    return "app/%s/%s" % (ctx.workspace_name, f.short_path)

def _files_layer(ctx, suffix, files):
    blob = ctx.actions.declare_file("%s.%s.tar.gz" % (ctx.label.name, suffix))
    descriptor = ctx.actions.declare_file("%s.%s.json" % (ctx.label.name, suffix))
    args = ctx.actions.args()
    args.use_param_file("@%s", use_always = True)
    args.set_param_file_format("multiline")
    args.add("--mtime", SOURCE_DATE_EPOCH)
    args.add("--blob", blob)
    args.add("--descriptor", descriptor)
    args.add_all(["%s=%s" % (_image_path(ctx, f), f.path) for f in files])
    ctx.actions.run(
        executable = ctx.executable._files_layer,
        arguments = [args],
        inputs = files,
        outputs = [blob, descriptor],
        mnemonic = "ImageLayer",
        progress_message = "Layer %s of %s (%d files)" % (suffix, ctx.label, len(files)),
    )
    return struct(descriptor = descriptor, blob = blob)

def _oci_image_impl(ctx):
    base = ctx.attr.base[ImageInfo]
    runfiles = depset(transitive = [dep[DefaultInfo].default_runfiles.files for dep in ctx.attr.deps])
    present = {f.path: True for f in base.files.to_list()}

    # A py_binary's launcher stub runs under Bazel only; images start python3 -m directly.
    for dep in ctx.attr.deps:
        if dep[DefaultInfo].files_to_run.executable:
            present[dep[DefaultInfo].files_to_run.executable.path] = True
    # Bytecode in the runfiles (the third-party repository's, for tests) is left out: the
    # files layer compiles its own next to every source.
    new = [
        f
        for f in runfiles.to_list()
        if f.path not in present and not f.path.endswith(".pyc") and
           not _image_path(ctx, f)[len("app/"):].startswith(tuple(ctx.attr.exclude))
    ]
    layers = list(base.layers)
    third_party = [f for f in new if f.owner.workspace_name]
    first_party = [f for f in new if not f.owner.workspace_name]
    if third_party:
        layers.append(_files_layer(ctx, "deps", third_party))
    if first_party:
        layers.append(_files_layer(ctx, "app", first_party))

    imports = depset(transitive = [base.imports] + [dep[PyInfo].imports for dep in ctx.attr.deps])
    pythonpath = ["/app/" + ctx.workspace_name] + ["/app/" + i for i in sorted(imports.to_list())]
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": ":".join(pythonpath),
        # Read-only root filesystems: no .pyc writes. Event lines must leave unbuffered.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(ctx.attr.env)

    oci = ctx.actions.declare_directory(ctx.label.name + ".oci")
    archive = ctx.actions.declare_file(ctx.label.name + ".tar")
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    args = ctx.actions.args()
    args.add_all(["%s=%s" % (l.descriptor.path, l.blob.path) for l in layers], before_each = "--layer")
    args.add("--name", "%s:%s" % (ctx.attr.repository, ctx.attr.tag))
    args.add("--entrypoint", json.encode(ctx.attr.entrypoint))
    args.add_all(["%s=%s" % (k, env[k]) for k in sorted(env)], before_each = "--env")
    args.add_all(["%s=%s" % (k, v) for k, v in sorted(ctx.attr.labels.items())], before_each = "--label")
    args.add("--user", ctx.attr.user)
    args.add("--mtime", SOURCE_DATE_EPOCH)
    args.add("--oci-layout", oci.path)
    args.add("--docker-archive", archive)
    args.add("--digest", digest)
    ctx.actions.run(
        executable = ctx.executable._image,
        arguments = [args],
        inputs = [l.descriptor for l in layers] + [l.blob for l in layers],
        outputs = [oci, archive, digest],
        mnemonic = "OciImage",
        progress_message = "Image %s" % ctx.label,
    )
    return [
        DefaultInfo(
            files = depset([oci, archive, digest]),
            runfiles = ctx.runfiles([oci, archive, digest]),
        ),
        ImageInfo(
            layers = layers,
            files = depset(transitive = [base.files, runfiles]),
            imports = imports,
        ),
    ]

oci_image = rule(
    implementation = _oci_image_impl,
    attrs = {
        "base": attr.label(mandatory = True, providers = [ImageInfo]),
        "deps": attr.label_list(providers = [PyInfo]),
        "entrypoint": attr.string_list(mandatory = True),
        "user": attr.string(mandatory = True, doc = "uid:gid"),
        "env": attr.string_dict(),
        "exclude": attr.string_list(doc = "runfiles path prefixes left out (e.g. pypi/site/pkg/)"),
        "labels": attr.string_dict(),
        "repository": attr.string(mandatory = True),
        "tag": attr.string(default = "local"),
        "_files_layer": attr.label(default = "//images/tools:files_layer", executable = True, cfg = "exec"),
        "_image": attr.label(default = "//images/tools:image", executable = True, cfg = "exec"),
    },
)
