"""Reading Compose files written by others: YAML as Compose reads it, include, extends, variables.

The reference is what Compose itself does (the Compose specification and its merge rules):
a file Compose accepts loads here with the same values; a file Compose refuses is one clear
line (exit 2 from the CLI), never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackprobe.cli import _invoke
from stackprobe.compose.env import interpolate, parse_dotenv, references
from stackprobe.compose.lint import lint
from stackprobe.compose.model import ComposeError, ComposeFile, load_compose


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ComposeFile:
    return load_compose(write(tmp_path, "compose.yaml", text), env={} if env is None else env)


def refused(tmp_path: Path, text: str, name: str = "compose.yaml") -> str:
    with pytest.raises(ComposeError) as caught:
        load_compose(write(tmp_path, name, text), env={})
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- YAML merge keys: explicit keys override merged ones; true duplicates are refused -------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # the report: an explicit key after a merge overrides the merged one
            "x-a: &a {image: redis:7.2, restart: always}\n"
            "services: {r: {<<: *a, restart: unless-stopped}}\n",
            {"image": "redis:7.2", "restart": "unless-stopped"},
        ),
        (  # block style, the explicit key written before the merge
            "x-a: &a\n  image: redis:7.2\n  restart: always\n"
            "services:\n  r:\n    restart: on-failure\n    <<: *a\n",
            {"image": "redis:7.2", "restart": "on-failure"},
        ),
        (  # several sources: the earlier one wins among them, explicit keys over all
            "x-a: &a {image: 'a:1', restart: always}\n"
            "x-b: &b {image: 'b:1', restart: 'no', privileged: true}\n"
            "services: {r: {<<: [*a, *b], privileged: false}}\n",
            {"image": "a:1", "restart": "always", "privileged": False},
        ),
        (  # a merged mapping that merges itself
            "x-base: &base {image: 'redis:7.2', restart: always}\n"
            "x-mid: &mid {<<: *base, restart: unless-stopped}\n"
            "services: {r: {<<: *mid}}\n",
            {"image": "redis:7.2", "restart": "unless-stopped"},
        ),
    ],
)
def test_merge_keys_follow_yaml_merge_rules(
    tmp_path: Path, text: str, expected: dict[str, object]
) -> None:
    svc = load(tmp_path, text).services["r"]
    seen = {"image": svc.image, "restart": svc.restart, "privileged": svc.privileged}
    assert {k: seen[k] for k in expected} == expected


def test_a_merged_environment_is_replaced_whole_by_an_explicit_one(tmp_path: Path) -> None:
    text = (
        "x-env: &env {environment: {A: '1', B: '2'}, image: 'app:1'}\n"
        "services:\n  a: {<<: *env}\n  b: {<<: *env, environment: {C: '3'}}\n"
    )
    compose = load(tmp_path, text)
    assert compose.services["a"].environment == {"A": "1", "B": "2"}
    assert compose.services["b"].environment == {"C": "3"}  # YAML merge is shallow


@pytest.mark.parametrize(
    "text",
    [
        "services:\n  a:\n    image: x:1\n    image: y:1\n",
        "x-a: &a {image: 'x:1'}\nservices:\n  a:\n    <<: *a\n    restart: always\n    restart: 'no'\n",
        "services:\n  a: {image: 'x:1'}\n  a: {image: 'y:1'}\n",
    ],
)
def test_a_key_written_twice_in_one_mapping_is_still_refused(tmp_path: Path, text: str) -> None:
    assert "duplicate key" in refused(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (
            "a: !!python/object/apply:os.system ['true']\nservices: {a: {image: 'x:1'}}\n",
            "constructor",
        ),
        ("x: &x [*x]\nservices: {a: {image: 'x:1'}}\n", "alias"),
        ("x: {<<: 1}\nservices: {a: {image: 'x:1'}}\n", "merge key"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
            "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
            "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nservices: {a: {image: 'x:1'}}\n",
            "expands",
        ),
        ("x: " + "[" * 5000 + "\nservices: {a: {image: 'x:1'}}\n", "nested too deeply"),
    ],
)
def test_tags_never_run_and_limits_hold(tmp_path: Path, text: str, what: str) -> None:
    assert what in refused(tmp_path, text)


def test_plain_scalars_resolve_as_in_yaml_1_2(tmp_path: Path) -> None:
    text = (
        "services:\n  a:\n    image: x:1\n    restart: no\n    ports: [8080:80]\n"
        "    environment: {FLAG: yes, OFF: off, DAY: 2024-01-01}\n    privileged: false\n"
    )
    svc = load(tmp_path, text).services["a"]
    assert svc.restart == "no"
    assert (svc.ports[0].published, svc.ports[0].target) == ((8080, 8080), (80, 80))
    assert svc.environment == {"FLAG": "yes", "OFF": "off", "DAY": "2024-01-01"}


# --- extends -----------------------------------------------------------------------------


BASE = """
services:
  common:
    image: redis:7.2.5
    command: ["redis-server", "--appendonly", "yes"]
    entrypoint: ["docker-entrypoint.sh"]
    environment: {A: "1", B: base}
    labels: [team=core, tier=cache]
    ports: ["127.0.0.1:6379:6379"]
    expose: ["7000"]
    dns: 10.0.0.1
    volumes: ["./data:/data", "conf:/etc/redis"]
    depends_on: [other]
    links: [other]
    volumes_from: [other]
    healthcheck: {test: ["CMD", "redis-cli", "ping"], interval: 5s, retries: 3}
  other: {image: "busybox:1.36"}
"""


def test_extends_merges_by_the_compose_rules(tmp_path: Path) -> None:
    write(tmp_path, "base/compose.yaml", BASE)
    (tmp_path / "base" / "data").mkdir()
    text = """
services:
  cache:
    extends: {file: base/compose.yaml, service: common}
    command: ["redis-server", "--save", ""]
    environment: [B=mine, C=3]
    labels: {tier: hot}
    ports: ["127.0.0.1:6379:6379", "127.0.0.1:16379:6379"]
    expose: [7001]
    dns: [10.0.0.2]
    volumes: [{type: volume, source: cache-data, target: /data}]
    healthcheck: {test: ["CMD", "true"]}
volumes: {cache-data: {}, conf: {}}
"""
    compose = load(tmp_path, text)
    svc = compose.services["cache"]
    assert svc.command == ("redis-server", "--save", "")  # replaced
    assert svc.entrypoint == ("docker-entrypoint.sh",)  # inherited
    assert svc.environment == {"A": "1", "B": "mine", "C": "3"}  # merged by key
    assert [(p.published, p.target) for p in svc.ports] == [
        ((6379, 6379), (6379, 6379)),
        ((16379, 16379), (6379, 6379)),
    ]  # appended, no repeat
    assert svc.expose == [7000, 7001]
    assert [(m.source, m.target) for m in svc.volumes] == [
        ("cache-data", "/data"),
        ("conf", "/etc/redis"),
    ]
    assert svc.healthcheck is not None and svc.healthcheck.test == ("CMD", "true")
    assert (svc.healthcheck.interval_s, svc.healthcheck.retries) == (5.0, 3)  # merged around test
    assert svc.depends_on == {}  # depends_on, links, volumes_from are not inherited
    assert set(compose.services) == {"cache"}


def test_extends_keeps_the_bases_relative_paths_relative_to_its_file(tmp_path: Path) -> None:
    write(tmp_path, "base/compose.yaml", BASE)
    (tmp_path / "base" / "data").mkdir()
    text = "services:\n  cache:\n    extends: {file: base/compose.yaml, service: common}\nvolumes: {conf: {}}\n"
    compose = load(tmp_path, text)
    [bind] = [m for m in compose.services["cache"].volumes if m.type == "bind"]
    assert Path(bind.source or "") == tmp_path / "base" / "data"
    assert "bind-source-missing" not in {f.rule for f in lint(compose).findings}


@pytest.mark.parametrize(
    "text",
    [
        "services:\n  base: {image: 'redis:7.2.5', restart: always}\n  r: {extends: base}\n",
        "services:\n  base: {image: 'redis:7.2.5', restart: always}\n  r: {extends: {service: base}}\n",
        "services:\n  a: {image: 'redis:7.2.5', restart: always}\n  b: {extends: a}\n  r: {extends: b}\n",
    ],
)
def test_extends_in_the_same_file(tmp_path: Path, text: str) -> None:
    svc = load(tmp_path, text).services["r"]
    assert (svc.image, svc.restart) == ("redis:7.2.5", "always")


def test_reset_and_override_tags(tmp_path: Path) -> None:
    text = """
services:
  base:
    image: app:1
    ports: ["8080:80"]
    environment: {A: "1", B: "2"}
  r:
    extends: base
    ports: !reset []
    environment: !override {C: "3"}
"""
    svc = load(tmp_path, text).services["r"]
    assert svc.ports == [] and svc.environment == {"C": "3"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"compose.yaml": "services:\n  a: {extends: a}\n"}, "extends cycle"),
        ({"compose.yaml": "services:\n  a: {extends: b}\n  b: {extends: a}\n"}, "extends cycle"),
        ({"compose.yaml": "services:\n  a: {extends: {file: other.yaml, service: b}}\n"}, "other.yaml does not exist"),
        ({"compose.yaml": "services:\n  a: {extends: nope}\n  b: {image: 'x:1'}\n"}, "no service 'nope'"),
        ({"compose.yaml": "include: [missing.yaml]\nservices: {a: {image: 'x:1'}}\n"}, "missing.yaml does not exist"),
        (
            {
                "compose.yaml": "include: [b/compose.yaml]\nservices: {a: {image: 'x:1'}}\n",
                "b/compose.yaml": "include: [../compose.yaml]\nservices: {b: {image: 'x:1'}}\n",
            },
            "include cycle",
        ),
        (
            {
                "compose.yaml": "include: [other.yaml]\nservices: {a: {image: 'x:1'}}\n",
                "other.yaml": "services: {a: {image: 'y:1'}}\n",
            },
            "defines service 'a', which is already defined",
        ),
    ],
)  # fmt: skip
def test_missing_files_cycles_and_conflicts_are_one_line(
    tmp_path: Path, files: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    main = tmp_path / "compose.yaml"
    with pytest.raises(ComposeError, match=expected):
        load_compose(main, env={})
    assert _invoke(["compose", "lint", str(main)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


# --- include -----------------------------------------------------------------------------


def test_include_short_and_long_forms(tmp_path: Path) -> None:
    write(
        tmp_path,
        "obs/compose.yaml",
        "services:\n  prom:\n    image: prom/prometheus:${PROM_TAG}\n    volumes: ['./prometheus.yml:/etc/prometheus/prometheus.yml:ro']\n",
    )
    write(tmp_path, "obs/prometheus.yml", "scrape_configs: []\n")
    write(tmp_path, "obs/.env", "PROM_TAG=v2.42.0\n")
    write(tmp_path, "cache/compose.yaml", "services:\n  cache: {image: 'redis:${REDIS_TAG:-7}'}\n")
    write(tmp_path, "cache/vars.env", "REDIS_TAG=7.2.5\n")
    text = (
        "include:\n  - obs/compose.yaml\n"
        "  - path: cache/compose.yaml\n    env_file: cache/vars.env\n"
        "services:\n  app: {image: 'app:1'}\n"
    )
    compose = load(tmp_path, text)
    assert set(compose.services) == {"app", "prom", "cache"}
    assert compose.services["prom"].image == "prom/prometheus:v2.42.0"  # its project's .env
    assert compose.services["cache"].image == "redis:7.2.5"  # its env_file
    [bind] = compose.services["prom"].volumes
    assert Path(bind.source or "") == tmp_path / "obs" / "prometheus.yml"  # its own directory
    assert "bind-source-missing" not in {f.rule for f in lint(compose).findings}


def test_include_variables_of_the_including_project_win(tmp_path: Path) -> None:
    write(tmp_path, "sub/compose.yaml", "services:\n  c: {image: 'redis:${TAG}'}\n")
    write(tmp_path, "sub/.env", "TAG=from-sub\n")
    write(tmp_path, ".env", "TAG=from-main\n")
    compose = load(tmp_path, "include: [sub/compose.yaml]\nservices: {a: {image: 'x:1'}}\n")
    assert compose.services["c"].image == "redis:from-main"


def test_include_project_directory_and_path_list(tmp_path: Path) -> None:
    write(tmp_path, "parts/base.yaml", "services:\n  c: {image: 'redis:7.2.5', build: ./ctx}\n")
    write(tmp_path, "parts/override.yaml", "services:\n  c: {restart: always}\n")
    (tmp_path / "root" / "ctx").mkdir(parents=True)
    text = (
        "include:\n  - path: [parts/base.yaml, parts/override.yaml]\n    project_directory: root\n"
        "services:\n  a: {image: 'x:1'}\n"
    )
    svc = load(tmp_path, text).services["c"]
    assert (svc.image, svc.restart) == ("redis:7.2.5", "always")
    assert Path(svc.build or "") == tmp_path / "root" / "ctx"


# --- variables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${V}", {"V": "x"}, "x"),
        ("$V/y", {"V": "x"}, "x/y"),
        ("${V:-d}", {"V": ""}, "d"),
        ("${V-d}", {"V": ""}, ""),
        ("${V-d}", {}, "d"),
        ("${V:?need V}", {"V": "x"}, "x"),
        ("${V?need V}", {"V": ""}, ""),
        ("${V:+alt}", {"V": "x"}, "alt"),
        ("${V+alt}", {"V": ""}, "alt"),
        ("$${V}", {"V": "x"}, "${V}"),
        ("$$V", {"V": "x"}, "$V"),
        ("${V:-${W:-redis://redis:6379/2}}", {}, "redis://redis:6379/2"),
        ("${BROKER:-redis://redis:6379/2}", {}, "redis://redis:6379/2"),
        ("cost: 5$", {}, "cost: 5$"),
    ],
)
def test_interpolation_is_composes(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


def test_references_see_nested_defaults() -> None:
    assert references("${A:-${B}} and $C, not $$D") == ["A", "B", "C"]


def test_dotenv_format() -> None:
    text = (
        "# a comment\nA=1\nexport B = two\nC='single ${A}'\nD=\"double\\n${A}\"\n"
        'E=x # trailing comment\nF=url#fragment\nG="multi\nline"\nH: yaml-ish\nI=${A}-${J:-j}\n'
    )
    assert parse_dotenv(text, {}) == {
        "A": "1",
        "B": "two",
        "C": "single ${A}",
        "D": "double\n1",
        "E": "x",
        "F": "url#fragment",
        "G": "multi\nline",
        "H": "yaml-ish",
        "I": "1-j",
    }


def test_the_shell_wins_over_dotenv(tmp_path: Path) -> None:
    write(tmp_path, ".env", "TAG=from-dotenv\nPORT=7000\n")
    text = "services:\n  a:\n    image: x:${TAG}\n    ports: ['127.0.0.1:${PORT}:80']\n"
    svc = load(tmp_path, text, env={"TAG": "from-shell"}).services["a"]
    assert svc.image == "x:from-shell" and svc.ports[0].published == (7000, 7000)


def test_env_file_values_join_the_environment(tmp_path: Path) -> None:
    write(tmp_path, "app.env", "BROKER=redis://cache:6379/3\nMODE=file\n")
    text = (
        "services:\n  a:\n    image: x:1\n    env_file: [app.env, {path: absent.env, required: false}]\n"
        "    environment: {MODE: explicit}\n"
    )
    svc = load(tmp_path, text).services["a"]
    assert svc.environment == {"BROKER": "redis://cache:6379/3", "MODE": "explicit"}
    assert [(e.path, e.required) for e in svc.env_files] == [
        ("app.env", True),
        ("absent.env", False),
    ]
    assert svc.environment_raw == {"MODE": "explicit"}  # what the Compose file itself writes
