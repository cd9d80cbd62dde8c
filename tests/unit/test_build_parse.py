"""Containerfile parsing, substitution, ARG scoping, the stage graph and ignore files: pure
functions, checked against the Dockerfile reference's own examples where it has them."""

from __future__ import annotations

import pytest

from rootless.build.args import ArgScope, parse_build_args, substitution_env
from rootless.build.errors import BuildError
from rootless.build.ignore import Matcher, parse_ignore
from rootless.build.parser import parse
from rootless.build.shellwords import Lexer, split_unquoted
from rootless.build.stages import plan_stages

# -- parser -----------------------------------------------------------------------------------


def test_continuations_comments_and_forms() -> None:
    cf = parse(
        "# a comment\n"
        "FROM busybox AS base\n"
        "RUN echo a \\\n"
        "# dropped comment inside the continuation\n"
        "\n"
        "    && echo b\n"
        'CMD ["sh", "-c", "echo hi"]\n'
        "ENTRYPOINT echo not json [\n"
        "run   echo lower-case keyword\n"
    )
    cmds = [(i.cmd, i.line) for i in cf.instructions]
    assert cmds == [("FROM", 2), ("RUN", 3), ("CMD", 7), ("ENTRYPOINT", 8), ("RUN", 9)]
    run = cf.instructions[1]
    assert run.args == "echo a     && echo b"
    assert run.json is None
    assert cf.instructions[2].json == ["sh", "-c", "echo hi"]
    assert cf.instructions[3].json is None


def test_escape_directive_and_syntax_notice() -> None:
    cf = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM scratch\nCOPY a `\n  b /\n")
    assert cf.escape == "`"
    assert cf.instructions[1].args == "a   b /"
    assert cf.notices and "ignoring '# syntax=docker/dockerfile:1'" in cf.notices[0]
    # a directive after a comment is only a comment
    cf = parse("# hello\n# escape=`\nFROM scratch\nRUN a \\\n  b\n")
    assert cf.escape == "\\" and cf.instructions[1].args == "a   b"


def test_heredocs() -> None:
    cf = parse(
        "FROM busybox\n"
        "RUN <<EOF\n"
        "echo one\n"
        "echo $HOME\n"
        "EOF\n"
        "COPY <<-'A' /a <<B /b\n"
        "\t\tliteral $X\n"
        "\tA\n"
        "b text\n"
        "B\n"
        "ENV X=1\n"
    )
    run, copy = cf.instructions[1], cf.instructions[2]
    assert run.heredocs[0].name == "EOF" and run.heredocs[0].content == "echo one\necho $HOME\n"
    assert run.heredocs[0].expand
    assert [h.name for h in copy.heredocs] == ["A", "B"]
    assert copy.heredocs[0].content == "literal $X\n" and not copy.heredocs[0].expand
    assert copy.heredocs[1].content == "b text\n"
    assert cf.instructions[3].cmd == "ENV"


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("FROM a\nFOO bar\n", 2, "unknown instruction: FOO"),
    ("RUN x\nFROM a\n", 1, "RUN before the first FROM"),
    ("ARG A\n", None, "no FROM instruction"),
    ("FROM a\nSHELL /bin/bash\n", 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM a\nCOPY --nope=1 a b\n", 2, "unknown flag for COPY: --nope"),
    ("FROM a\nRUN <<EOF\necho\n", 2, "heredoc <<EOF has no terminating line"),
    ("FROM a\nONBUILD FROM b\n", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("# escape=x\nFROM a\n", 1, "invalid escape token"),
    ("FROM a\nWORKDIR\n", 2, "WORKDIR requires at least one argument"),
])
def test_errors_name_file_and_line(text: str, line: int | None, reason: str) -> None:
    with pytest.raises(BuildError) as info:
        parse(text, "Dockerfile.x")
    assert reason in info.value.message
    assert info.value.file == "Dockerfile.x" and info.value.line == line
    assert info.value.exit_code == 125
    assert info.value.message.startswith(f"Dockerfile.x:{line}: " if line else "Dockerfile.x: ")


def test_flags() -> None:
    cf = parse("FROM --platform=linux/amd64 a\nCOPY --from=b --chown=1:2 --link x y\n"
               "RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t true\n")
    copy, run = cf.instructions[1], cf.instructions[2]
    assert copy.flag("from") == "b" and copy.flag("chown") == "1:2" and copy.flag("link") == ""
    assert copy.args == "x y"
    assert run.flags["mount"] == ["type=cache,target=/c", "type=tmpfs,target=/t"]
    assert cf.instructions[0].flag("platform") == "linux/amd64"


# -- substitution -----------------------------------------------------------------------------

ENV = {"A": "a", "EMPTY": "", "SP": "x y"}


@pytest.mark.parametrize(("word", "expected"), [
    ("$A", "a"), ("${A}", "a"), ("${A}b", "ab"), ("$Ab", ""), ("$UNSET", ""),
    ("${UNSET:-def}", "def"), ("${EMPTY:-def}", "def"), ("${EMPTY-def}", ""),
    ("${UNSET-def}", "def"), ("${A:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"),
    ("${UNSET:+alt}", ""), ("${UNSET:-${A}x}", "ax"),
    ("'$A'", "$A"), ('"$A b"', "a b"), ("\\$A", "$A"), ('"\\$A"', "$A"), ('"a\\b"', "a\\b"),
    ("a\\ b", "a b"), ("$", "$"), ("$/x", "$/x"), ('""', ""),
])
def test_process_word(word: str, expected: str) -> None:
    assert Lexer().process_word(word, ENV) == expected


def test_process_words_splits_unquoted_values_only() -> None:
    lexer = Lexer()
    assert lexer.process_words("$SP '$SP' \"$SP\" 80/tcp", ENV) == ["x", "y", "$SP", "x y",
                                                                     "80/tcp"]
    assert Lexer("`").process_word("`$A", ENV) == "$A"


def test_required_variable() -> None:
    with pytest.raises(BuildError, match="UNSET: needs a value"):
        Lexer().process_word("${UNSET:?needs a value}", ENV)
    with pytest.raises(BuildError, match="EMPTY"):
        Lexer().process_word("${EMPTY:?}", ENV)
    assert Lexer().process_word("${EMPTY?}", ENV) == ""


def test_split_unquoted_keeps_quotes() -> None:
    assert split_unquoted('A="x y" B=\'z\' C=d\\ e') == ['A="x y"', "B='z'", "C=d\\ e"]


# -- ARG scoping ------------------------------------------------------------------------------


def test_build_args_from_environment() -> None:
    assert parse_build_args(["A=1", "B", "C"], {"B": "env"}) == {"A": "1", "B": "env"}


def test_arg_scope() -> None:
    consumed: set[str] = set()
    scope = ArgScope({"V": "cli", "http_proxy": "http://p"}, {"META": "m"}, consumed)
    scope.declare("META", None)  # redeclared: takes the meta value
    scope.declare("V", "default")  # --build-arg wins
    scope.declare("D", "dflt")
    scope.declare("NONE", None)
    assert scope.values == {"META": "m", "V": "cli", "D": "dflt"}
    env = scope.run_env()
    assert env["http_proxy"] == "http://p" and env["V"] == "cli"
    assert "http_proxy" not in scope.history_args()
    assert consumed == {"V", "http_proxy"}
    # ENV wins over ARG
    assert substitution_env(scope, ["V=env"])["V"] == "env"


def test_meta_args_scope() -> None:
    cf = parse("ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG:-1} AS one\nARG BASE\n"
               "RUN echo\nFROM one\n")
    consumed: set[str] = set()
    graph = plan_stages(cf, {"TAG": "2"}, None, consumed)
    assert graph.stages[0].base == "busybox:2"
    assert graph.stages[1].base_stage == 0 and graph.stages[1].deps == {0}
    assert graph.order == [0, 1] and "TAG" in consumed


def test_stage_graph_and_target() -> None:
    cf = parse(
        "FROM scratch AS a\nCOPY x /x\n"
        "FROM busybox AS unused\nRUN false\n"
        "FROM busybox AS b\nARG SRC=a\nCOPY --from=$SRC /x /y\n"
        "RUN --mount=type=bind,from=0,target=/m true\n"
        "FROM b AS final\n", "Containerfile")
    graph = plan_stages(cf, {}, None, set(), context="/ctx")
    assert graph.target == 3 and graph.order == [0, 2, 3]
    assert graph.stages[2].deps == {0}
    graph = plan_stages(cf, {}, "UNUSED", set(), context="/ctx")
    assert graph.order == [1]
    with pytest.raises(BuildError, match="target stage 'nope' could not be found"):
        plan_stages(cf, {}, "nope", set(), context="/ctx")


@pytest.mark.parametrize(("text", "reason"), [
    ("FROM a\nCOPY --from=0 /x /y\n", "refers to the current or a later stage"),
    ("ARG B\nFROM ${B}\n", "base name (${B}) should not be blank"),
    ("FROM a\nCOPY ../secret /x\n", "forbidden path outside the build context: ../secret"),
    ("FROM a AS x\nFROM b AS X\n", "duplicate stage name 'x'"),
    ("ARG V\nFROM ${V:?required}\n", "V: required"),
])
def test_stage_errors(text: str, reason: str) -> None:
    with pytest.raises(BuildError) as info:
        plan_stages(parse(text, "Containerfile"), {}, None, set(), context="/ctx")
    assert reason in info.value.message
    assert info.value.line is not None


def test_copy_without_context() -> None:
    with pytest.raises(BuildError, match="no build context"):
        plan_stages(parse("FROM a\nCOPY x /x\n"), {}, None, set(), context=None)
    plan_stages(parse("FROM a\nCOPY <<EOF /x\nhi\nEOF\n"), {}, None, set(), context=None)


# -- ignore files -----------------------------------------------------------------------------


def test_ignore_rules() -> None:
    m = Matcher(parse_ignore(
        "# comment\n*.md\n!README.md\nbuild\n/abs\n**/*.pyc\ndocs/**/tmp\nsub/*.txt\n[ab].x\n"))
    assert m.excluded("notes.md") and not m.excluded("README.md")
    assert not m.excluded("sub/notes.md")  # `*.md` matches at the top only
    assert m.excluded("build") and m.excluded("build/out/x.o")
    assert m.excluded("abs/x")
    assert m.excluded("x.pyc") and m.excluded("a/b/c.pyc")
    assert m.excluded("docs/tmp") and m.excluded("docs/a/b/tmp/f")
    assert m.excluded("sub/a.txt") and not m.excluded("sub/deeper/a.txt")
    assert m.excluded("a.x") and not m.excluded("c.x")
    assert not m.excluded("src/main.py")


def test_ignore_exception_below_excluded_directory() -> None:
    m = Matcher(parse_ignore("data\n!data/keep\n"))
    assert m.excluded("data/drop") and not m.excluded("data/keep")
    assert m.may_include_below("data")
    assert not Matcher(parse_ignore("data\n")).may_include_below("data")
