"""The stack file: interpolation, secrets, and one precise line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackprobe.catalog import known_kinds
from stackprobe.config import find_stack_file
from stackprobe.errors import ConfigError
from stackprobe.loader import load_stack


def write(tmp_path: Path, text: str, name: str = "stackprobe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_stack(path, env=env or {})
    return info.value.problems


def test_minimal_stack_loads_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  cache: {kind: redis, url: 'redis://127.0.0.1:6379/0'}\n")
    stack = load_stack(path, env={})
    svc = stack.service("cache")
    assert (stack.name, svc.kind, svc.disruption, svc.depends_on) == (
        "stack",
        "redis",
        "forbidden",
        [],
    )


def test_interpolation_with_defaults_and_escape(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "stack: ${STACK:-staging}\nservices:\n"
        "  cache: {kind: redis, url: 'redis://${HOST}:${PORT:-6379}/0', options: {celery_queue: 'q$$1'}}\n",
    )
    stack = load_stack(path, env={"HOST": "10.0.0.5", "STACK": ""})
    assert stack.name == "staging"  # default applies when set but empty
    assert stack.service("cache").url == "redis://10.0.0.5:6379/0"
    assert stack.service("cache").options == {"celery_queue": "q$1"}


def test_unset_variable_outside_secrets_is_an_error_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "services:\n  cache: {kind: redis, url: 'redis://${HOST}:6379/0'}\n")
    assert problems(path) == [
        f"{path}: services.cache.url: variable ${{HOST}} is not set and has no default"
    ]


def test_unset_secret_is_a_warning_until_the_value_is_needed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://h:6379/0', password: '${REDIS_PW}'}\n",
    )
    stack = load_stack(path, env={})
    assert stack.warnings == [
        f"{path}: services.cache.password: variable ${{REDIS_PW}} is not set (needed when the service is checked)"
    ]
    with pytest.raises(
        ConfigError, match=r"services.cache.password: variable \$\{REDIS_PW\} is not set"
    ):
        stack.require_secrets(["cache"])


def test_password_file_is_relative_to_the_stack_file_and_loses_its_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis").write_text("s3cret-pw\n")
    path = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://h:6379/0', password_file: secrets/redis}\n",
    )
    stack = load_stack(path, env={})
    assert stack.service("cache").password == "s3cret-pw"
    assert "s3cret-pw" in stack.secrets()


def test_missing_password_file_names_field_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://h:6379/0', password_file: nope}\n",
    )
    [line] = problems(path)
    assert line.startswith(f"{path}: services.cache.password_file: cannot read ")
    assert "No such file" in line


def test_misspelled_field_and_unknown_kind_are_each_one_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n"
        "  cache: {kind: redis, ulr: 'redis://h:6379/0'}\n"
        "  db: {kind: mongodb, url: 'mongodb://h'}\n",
    )
    lines = problems(path)
    assert f"{path}: services.cache.ulr: unknown field (did you mean 'url'?)" in lines
    [kind_line] = [line for line in lines if "services.db.kind" in line]
    assert (
        kind_line
        == f"{path}: services.db.kind: unknown kind 'mongodb'; known kinds: {', '.join(known_kinds())}"
    )


def test_kind_specific_problems_are_collected_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n"
        "  cache: {kind: redis, url: 'http://h:6379', endpoints: {admin: 'x'}, options: {colour: 1}}\n"
        "  worker: {kind: celery, depends_on: [ghost]}\n",
    )
    assert sorted(problems(path)) == sorted(
        [
            f"{path}: services.cache.url: scheme 'http' not supported here (use redis or rediss)",
            f"{path}: services.cache.endpoints.admin: unknown endpoint for kind redis (known: sentinels)",
            f"{path}: services.cache.options.colour: unknown option (known: celery, celery_queue, celery_backend, sentinel_master)",
            f"{path}: services.worker.url: required field is missing",
            f"{path}: services.worker.depends_on: no service named 'ghost' in this stack",
        ]
    )


def test_links_default_to_the_only_candidate_and_ambiguity_is_an_error(tmp_path: Path) -> None:
    one = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://h:1/0'}\n  w: {kind: celery, url: 'redis://h:1/0'}\n",
    )
    assert load_stack(one, env={}).link("cache", "celery") == "w"
    two = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://h:1/0'}\n"
        "  w1: {kind: celery, url: 'redis://h:1/0'}\n  w2: {kind: celery, url: 'redis://h:1/0'}\n",
        "two.yaml",
    )
    assert problems(two) == [
        f"{two}: services.cache.links.celery: several celery services (w1, w2); name the one to use"
    ]


def test_dependency_cycle_is_reported_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  a: {kind: redis, url: 'redis://h:1/0', depends_on: [b]}\n"
        "  b: {kind: redis, url: 'redis://h:1/0', depends_on: [a]}\n",
    )
    assert problems(path) == [f"{path}: services: depends_on forms a cycle: a -> b -> a"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services: [\n", "invalid YAML"),
        ("services:\n  a: {kind: redis}\n  a: {kind: redis}\n", "duplicate key 'a'"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("version: 2\nservices: {}\n", "version: input should be 1, got 2"),
        ("services:\n  Bad_Name: {kind: redis, url: 'redis://h:1'}\n", "service name 'Bad_Name'"),
    ],
)
def test_malformed_files_get_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    lines = problems(path)
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: ")
    assert expected in lines[0]


def test_alias_bomb_and_huge_files_are_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x]\n" + "".join(f"b{i}: *a\n" for i in range(200))
    assert "YAML aliases" in problems(write(tmp_path, bomb))[0]
    huge = write(tmp_path, "# " + "x" * (1024 * 1024 + 1), "huge.yaml")
    assert "more than the 1048576 allowed" in problems(huge)[0]


def test_stack_file_is_found_by_flag_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STACKPROBE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no stack file"):
        find_stack_file(None)
    cwd_file = write(tmp_path, "services: {}\n")
    env_file = write(tmp_path, "services: {}\n", "env.yaml")
    assert find_stack_file(None) == Path("stackprobe.yaml")
    monkeypatch.setenv("STACKPROBE_CONFIG", str(env_file))
    assert find_stack_file(None) == env_file
    assert find_stack_file(str(cwd_file)) == cwd_file
    with pytest.raises(ConfigError, match="stack file not found"):
        find_stack_file(str(tmp_path / "missing.yaml"))


def test_nested_alias_expansion_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 10)
    ]
    [line] = problems(write(tmp_path, "\n".join(lines) + "\nservices: {}\n"))
    assert "expands to more than 100000 values" in line


def test_config_errors_never_echo_passwords(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://:hunter2secret@127.0.0.1:notaport/0'}\n"
        "  graf: {kind: redis, url: 'redis://h:1/0', password: 98765432123}\n",
    )
    text = "\n".join(problems(path))
    assert "hunter2secret" not in text and "98765432123" not in text
    assert "services.cache.url" in text and "services.graf.password" in text


# kind -> (stack entry, a wrong expectation and the field it names, a valid expectation)
EXPECTATIONS = {
    "grafana": (
        "url: 'http://g:3000'",
        "{query_ms: fast}",
        "expectations.query_ms",
        "{query_ms: 250}",
    ),
    "arangodb": (
        "url: 'http://a:8529'",
        "{query_ms: -1}",
        "expectations.query_ms",
        "{query_ms: 50}",
    ),
    "consul": (
        "url: 'http://c:8500'",
        "{min_peers: many}",
        "expectations.min_peers",
        "{min_peers: 3}",
    ),
    "prometheus": ("url: 'http://p:9090'", "{jobs: node}", "expectations.jobs", "{jobs: [node]}"),
    "tempo": (
        "url: 'http://t:3200'",
        "{retention: 2 weeks}",
        "expectations.retention",
        "{retention: 14d}",
    ),
    "jaeger": (
        "url: 'http://j:16686'",
        "{max_traces: 0}",
        "expectations.max_traces",
        "{retention: 72h}",
    ),
    "redis": ("url: 'redis://r:6379/0'", "{role: [master]}", "expectations.role", "{role: master}"),
}


@pytest.mark.parametrize("kind", sorted(EXPECTATIONS))
def test_expectations_are_validated_at_load_for_every_kind(tmp_path: Path, kind: str) -> None:
    entry, wrong, field, right = EXPECTATIONS[kind]
    path = write(tmp_path, f"services:\n  s: {{kind: {kind}, {entry}, expectations: {wrong}}}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}: services.s.{field}: "), problem
    unknown = write(
        tmp_path,
        f"services:\n  s: {{kind: {kind}, {entry}, expectations: {{nope: 1}}}}\n",
        "u.yaml",
    )
    (problem,) = problems(unknown)
    assert problem.startswith(
        f"{unknown}: services.s.expectations.nope: unknown expectation (known: "
    )
    valid = write(
        tmp_path, f"services:\n  s: {{kind: {kind}, {entry}, expectations: {right}}}\n", "v.yaml"
    )
    assert load_stack(valid, env={}).typed["s"].expectations is not None


def test_a_kind_without_expectations_refuses_any(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  w: {kind: celery, url: 'redis://r:6379/0', expectations: {workers: 2}}\n",
    )
    assert problems(path) == [
        f"{path}: services.w.expectations.workers: unknown expectation (known: none)"
    ]


def test_bad_expectation_exits_2_from_config_check(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  g: {kind: grafana, url: 'http://g:3000', expectations: {query_ms: fast}}\n",
    )
    result = subprocess.run(
        [sys.executable, "-m", "stackprobe", "config", "check", "-c", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"{path}: services.g.expectations.query_ms: Input should be a valid number"
    )
    assert "Traceback" not in result.stderr


def test_merged_keys_may_be_overridden_but_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "x-redis: &r {kind: redis, url: 'redis://a:6379/0', disruption: forbidden}\n"
        "services:\n  cache: {<<: *r, disruption: allowed}\n",
    )
    assert load_stack(path, env={}).service("cache").disruption == "allowed"
    twice = write(tmp_path, "services:\n  c: {kind: redis, kind: consul}\n", "twice.yaml")
    assert "duplicate key 'kind'" in problems(twice)[0]


def test_an_unset_password_inside_a_url_is_a_secret_like_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "services:\n  cache: {kind: redis, url: 'redis://:${REDIS_PASSWORD}@cache:6379/0'}\n",
    )
    stack = load_stack(path, env={})
    assert stack.warnings == [
        f"{path}: services.cache.url: variable ${{REDIS_PASSWORD}} is not set (needed when the service is checked)"
    ]
    with pytest.raises(
        ConfigError, match=r"services.cache.url: variable \$\{REDIS_PASSWORD\} is not set"
    ):
        stack.require_secrets(["cache"])
    host = write(
        tmp_path, "services:\n  cache: {kind: redis, url: 'redis://:pw@${HOST}:6379/0'}\n", "h.yaml"
    )
    assert problems(host) == [
        f"{host}: services.cache.url: variable ${{HOST}} is not set and has no default"
    ]
