"""Fixtures of the integration tests: the Prometheus builds they run against."""

from __future__ import annotations

import pytest

from tests.integration.prometheus_instance import BUILDS, PrometheusBuild, checked


@pytest.fixture(scope="module", params=BUILDS, ids=[b.id for b in BUILDS])
def prometheus_build(request: pytest.FixtureRequest) -> PrometheusBuild:
    """Each Prometheus major version installed here (Debian's 2.42, 3.x built from its Go
    module), its binaries' versions checked; a test starts that build's server (`build=`)
    and, where stackprobe runs promtool, puts its promtool first on PATH for itself
    (`promtool_on_path`). Fails in CI and skips elsewhere when the build is not installed."""
    return checked(request.param)
