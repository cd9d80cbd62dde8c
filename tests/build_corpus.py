"""The build corpus: Containerfiles built by `rl build` and by `buildah bud`, whose file trees
and configs must agree (tests/integration/test_build_corpus.py).

Each case: a Containerfile (BASE is the local busybox test image, URL a local HTTP server),
its context files, extra build flags, and — where buildah 1.28 lacks a feature (heredocs) —
an equivalent Containerfile for buildah. Context files: name → text, or (text, mode), or
("->", target) for a symlink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    name: str
    containerfile: str
    files: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    buildah_containerfile: str | None = None  # when buildah needs other words for the same


CASES = [
    Case("env", 'FROM BASE\nENV A=1 B="two words" C=${A}x\nENV LEGACY the rest of it\n'),
    Case("label", 'FROM BASE\nLABEL a=b "c d"=e\nLABEL multi=1 \\\n  line=2\n'),
    Case("cmd-exec", 'FROM BASE\nCMD ["echo", "hi"]\n'),
    Case("cmd-shell", "FROM BASE\nCMD echo hi $HOME\n"),
    Case("entrypoint", 'FROM BASE\nCMD ["x"]\nENTRYPOINT ["/bin/echo"]\n'),
    Case("entrypoint-then-cmd", 'FROM BASE\nENTRYPOINT ["/bin/echo"]\nCMD ["y"]\n'),
    Case("workdir", "FROM BASE\nWORKDIR /a\nWORKDIR b\nWORKDIR ../c\nRUN pwd > /pwd\n",
         buildah_containerfile="FROM BASE\nRUN mkdir -p /a/b\nWORKDIR /a\nWORKDIR b\n"
                               "WORKDIR ../c\nRUN pwd > /pwd\n"),
    # Docker makes a WORKDIR's directory even when nothing uses it; buildah 1.28 does not
    Case("workdir-only", "FROM BASE\nWORKDIR /made/by/workdir\n",
         buildah_containerfile="FROM BASE\nRUN mkdir -p /made/by/workdir\n"
                               "WORKDIR /made/by/workdir\n"),
    Case("workdir-then-copy", "FROM BASE\nWORKDIR /app\nENV X=1\nWORKDIR /srv/data\n"
                              "COPY a.txt /elsewhere/\nWORKDIR /etc\n", {"a.txt": "a"},
         buildah_containerfile="FROM BASE\nRUN mkdir -p /app /srv/data\nWORKDIR /app\nENV X=1\n"
                               "WORKDIR /srv/data\nCOPY a.txt /elsewhere/\nWORKDIR /etc\n"),
    Case("user", "FROM BASE\nUSER 1000:1000\nRUN id > /tmp/id || true\n"),
    Case("expose", "FROM BASE\nEXPOSE 80 53/udp 8080/tcp\n"),
    Case("volume", 'FROM BASE\nVOLUME ["/data", "/logs"]\nVOLUME /plain /two\n'),
    Case("stopsignal", "FROM BASE\nSTOPSIGNAL SIGINT\n"),
    Case("shell", 'FROM BASE\nSHELL ["/bin/sh", "-ec"]\nRUN echo $0 > /shell\nCMD echo x\n',
         # buildah 1.28 ignores SHELL for a shell-form CMD (openshift/imagebuilder#154)
         buildah_containerfile='FROM BASE\nSHELL ["/bin/sh", "-ec"]\nRUN echo $0 > /shell\n'
                               'CMD ["/bin/sh", "-ec", "echo x"]\n'),
    Case("healthcheck", 'FROM BASE\nHEALTHCHECK --interval=5s --retries=2 CMD ["true"]\n'),
    Case("onbuild", "FROM BASE\nONBUILD RUN echo triggered > /onbuild\n"),
    Case("arg-default", "FROM BASE\nARG V=dflt\nRUN echo $V > /v\nENV FROM_ARG=$V\n"),
    Case("arg-build-arg", "FROM BASE\nARG V=dflt\nRUN echo $V > /v\nLABEL v=$V\n",
         flags=["--build-arg", "V=given"]),
    Case("arg-meta", "ARG DIR=/meta\nFROM BASE\nARG DIR\nRUN mkdir -p $DIR\nENV D=$DIR\n"),
    Case("substitution", "FROM BASE\nENV A=a E=\nENV B=${A:-x} C=${E:-y} D=${A:+z} F=${U:+w}"
                         " G=\\$A H='$A'\n"),
    Case("copy-file", "FROM BASE\nCOPY a.txt /dst/a.txt\nCOPY a.txt /dst2/\nCOPY a.txt /etc\n",
         {"a.txt": "A\n"}),
    Case("copy-dir", "FROM BASE\nCOPY dir /copied\nCOPY dir/ /copied2/\n",
         {"dir/x": "x\n", "dir/sub/y": ("y\n", 0o600), "dir/sub/deeper/z": "z\n"}),
    Case("copy-into-existing", "FROM BASE\nCOPY dir /etc/\n", {"dir/extra.conf": "e\n"}),
    Case("copy-glob", "FROM BASE\nCOPY *.txt /g/\nCOPY f?.md /h/\n",
         {"a.txt": "a", "b.txt": "b", "c.dat": "c", "f1.md": "1", "f22.md": "2"}),
    Case("copy-chown", "FROM BASE\nCOPY --chown=1000:1000 dir /owned\n"
                       "COPY --chown=user a /named\nCOPY --chown=33 a /numeric\n",
         {"dir/f": "f", "a": "a"}),
    Case("copy-chmod", "FROM BASE\nCOPY --chmod=0750 a /a\nCOPY --chmod=640 dir /d\n",
         {"a": "a", "dir/f": "f"}),
    Case("copy-modes", "FROM BASE\nCOPY . /ctx\n",
         {"exec.sh": ("#!/bin/sh\n", 0o755), "private": ("p", 0o600), "ro": ("r", 0o444)}),
    Case("copy-symlinks", "FROM BASE\nCOPY tree /tree\nCOPY link-to-file /followed\n",
         {"tree/target": "t", "tree/rel": ("->", "target"), "tree/abs": ("->", "/etc/passwd"),
          "file": "content", "link-to-file": ("->", "file")}),
    Case("copy-hardlinks", "FROM BASE\nCOPY hl /hl\n", {"hl/one": "same", "hl/two": ("=>", "hl/one")}),
    Case("copy-empty-dir", "FROM BASE\nCOPY empty /empty\n", {"empty/": None}),
    Case("copy-workdir-relative", "FROM BASE\nWORKDIR /w\nCOPY a rel\nCOPY a ./dir/\n", {"a": "a"}),
    Case("add-tar", "FROM BASE\nADD archive.tar.gz /unpacked/\nADD plain.txt /plain\n",
         {"archive.tar.gz": "@tar", "plain.txt": "p"}),
    Case("add-url", "FROM BASE\nADD URL/remote.txt /downloaded/\nADD URL/remote.txt /named.txt\n"),
    Case("ignore", "FROM BASE\nCOPY . /ctx\n",
         {".dockerignore": "*.log\nbuild\n**/*.tmp\n", "keep.txt": "k", "drop.log": "d",
          "build/out": "o", "src/x.tmp": "t", "src/main.c": "m"}),
    Case("ignore-exception", "FROM BASE\nCOPY . /ctx\n",
         {".containerignore": "*.md\n!README.md\ndata\n!data/keep\n", "README.md": "r",
          "NOTES.md": "n", "data/keep": "k", "data/drop": "d", "other": "o"}),
    Case("multistage", "FROM BASE AS build\nRUN mkdir /out && echo built > /out/artifact\n"
                       "FROM BASE\nCOPY --from=build /out/artifact /artifact\n"
                       "COPY --from=0 /out /out-dir\n"),
    Case("from-stage", "FROM BASE AS one\nRUN echo one > /one\nENV STAGE=one\n"
                       "FROM one AS two\nRUN echo two > /two\n"),
    Case("target", "FROM BASE AS wanted\nRUN echo wanted > /w\nFROM BASE\nRUN false\n",
         flags=["--target", "wanted"]),
    Case("scratch", "FROM scratch\nCOPY a /a\nCOPY dir /\n", {"a": "a", "dir/b/c": "c"}),
    Case("whiteout", "FROM BASE\nRUN rm /etc/group && rm -r /root\n"),
    Case("opaque", "FROM BASE\nRUN mkdir -p /o/sub && echo 1 > /o/sub/f\n"
                   "RUN rm -rf /o && mkdir /o && echo 2 > /o/g\n"),
    Case("run-chown", "FROM BASE\nRUN mkdir -p /srv/www && touch /srv/www/i && "
                      "chown -R 33:33 /srv/www && chmod 4755 /srv/www/i\n"),
    Case("run-exec", 'FROM BASE\nRUN ["/bin/sh", "-c", "echo exec > /exec"]\n'),
    Case("run-env", "FROM BASE\nENV E=env\nARG A=arg\nRUN echo $E $A > /envs\n"),
    Case("run-links", "FROM BASE\nRUN echo x > /f && ln /f /hard && ln -s /f /soft\n"),
    Case("heredoc-run", "FROM BASE\nRUN <<EOF\necho one > /h1\necho two >> /h1\nEOF\n",
         buildah_containerfile="FROM BASE\nRUN echo one > /h1 && echo two >> /h1\n"),
    Case("heredoc-copy", "FROM BASE\nENV W=world\nCOPY <<EOF /greeting\nhello $W\nEOF\n",
         buildah_containerfile="FROM BASE\nENV W=world\nRUN printf 'hello world\\n' > /greeting"
                               " && chmod 644 /greeting\n"),
    Case("cache-mount", "FROM BASE\nRUN --mount=type=cache,target=/cache echo c > /cache/f && "
                        "ls /cache > /listing\n"),
    Case("secret-mount", "FROM BASE\nRUN --mount=type=secret,id=tok cat /run/secrets/tok > /got\n",
         {"secret.txt": "s3cret"}, flags=["--secret", "id=tok,src=SECRET"]),
    Case("mount-from-stage",
         "FROM BASE AS build\nRUN mkdir -p /out/sub && echo art > /out/sub/a && echo t > /out/t\n"
         "RUN rm /out/t && echo t2 > /out/t2 && rm -r /root\n"
         "FROM BASE\n"
         "RUN --mount=type=bind,from=build,source=/out,target=/mnt/o cat /mnt/o/sub/a > /got"
         " && ls /mnt/o > /listing\n"
         "RUN --mount=type=bind,from=build,target=/st ls /st > /whole\n"
         "RUN --mount=type=bind,from=build,source=/out/t2,target=/file cat /file > /got-file\n"
         "RUN --mount=type=bind,from=build,source=/out,target=/rw,rw echo x > /rw/new"
         " && ls /rw > /rw-listing\n"
         "RUN --mount=type=bind,from=BASE,source=/etc,target=/base-etc ls /base-etc > /etcs\n"),
    Case("continuations", "# comment\nFROM BASE\nRUN echo a \\\n# inner comment\n  b > /ab\n"
                          "LABEL x=1 \\\n      y=2\n"),
    Case("escape", "# escape=`\nFROM BASE\nRUN echo a `\n  b > /ab\n"),
    Case("copy-from-image", "FROM scratch\nCOPY --from=BASE /bin/busybox /bin/busybox\n"),
    Case("squash", "FROM BASE\nRUN echo 1 > /one\nRUN rm /one && echo 2 > /two\n",
         flags=["--squash"]),
    Case("maintainer-user-workdir", "FROM BASE\nMAINTAINER someone\nUSER user\nWORKDIR /home/u\n"
                                    "CMD sh\n",
         buildah_containerfile="FROM BASE\nMAINTAINER someone\nRUN mkdir -p /home/u\nUSER user\n"
                               "WORKDIR /home/u\nCMD sh\n"),
]
