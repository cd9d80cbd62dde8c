"""`rl build`: Containerfiles turned into images on rl's own launcher and store.

One job per module, pure functions where the work allows it:

    errors.py      BuildError: file, line and reason (exit 125)
    shellwords.py  Docker's word rules: quotes, escapes, ${VAR:-default} substitution
    parser.py      the Containerfile's text → instructions (directives, continuations,
                   comments, heredocs, JSON/exec vs shell forms, flags)
    args.py        ARG scoping: meta args before FROM, per stage, proxy args, --build-arg
    stages.py      the stage graph: FROM … AS name, FROM <stage>, --target, what each needs
    ignore.py      .containerignore/.dockerignore with Go's filepath.Match rules and `!`
    layer.py       a layer directory → an OCI tar (+gzip/zstd) with its diff_id
    copy.py        COPY/ADD into a new layer, without a container
    run.py         RUN as a launch of the previous layers, its upper dir kept as the layer
    cache.py       the layer cache: parent + instruction + inputs → layer
    imageconfig.py the image config and history as Docker writes them
    builder.py     the steps, in order, for one build
"""
