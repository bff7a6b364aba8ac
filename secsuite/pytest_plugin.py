"""pytest plugin (entry point `pytest11`): robustness baselines as regression tests.

    def test_digits_model_is_still_robust(secsuite_baseline):
        report = secsuite.evaluate(model, data, {"eps": [0.05, 0.1]}, attacks=["fgsm", "pgd"])
        secsuite_baseline(report, tolerance={"default": 0.02, "pgd": 0.04})

Baselines live in `.secsuite/baselines.json` under the rootdir (ini option `secsuite_baselines`);
`pytest --secsuite-update-baselines` records the current metrics instead of comparing.
Imports of torch and secsuite are deferred so that loading the plugin costs nothing.
"""

from __future__ import annotations

import pytest

DEFAULT_PATH = ".secsuite/baselines.json"
_STORE = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("secsuite", "secsuite robustness baselines")
    group.addoption("--secsuite-update-baselines", action="store_true", default=False,
                    help="record the current robustness metrics as the baselines instead of comparing against them")
    parser.addini("secsuite_baselines", default=DEFAULT_PATH, help=f"baseline file, relative to the rootdir (default {DEFAULT_PATH})")


def _store(config: pytest.Config):
    if _STORE not in config.stash:
        from secsuite.testing import Baselines

        path = config.rootpath / config.getini("secsuite_baselines")
        config.stash[_STORE] = Baselines(path, update=config.getoption("secsuite_update_baselines"))
    return config.stash[_STORE]


class BaselineCheck:
    """Called with a Report (or a metrics dict); `name` defaults to the test's node id."""

    def __init__(self, store, default_name: str):
        self.store, self.default_name = store, default_name

    def __call__(self, report, name: str | None = None, tolerance=None):
        from secsuite.testing import DEFAULT_TOLERANCE, RobustnessRegression

        try:
            return self.store.check(name or self.default_name, report, DEFAULT_TOLERANCE if tolerance is None else tolerance)
        except RobustnessRegression as error:
            pytest.fail(str(error), pytrace=False)


@pytest.fixture
def secsuite_baseline(request: pytest.FixtureRequest) -> BaselineCheck:
    return BaselineCheck(_store(request.config), request.node.nodeid)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    store = config.stash.get(_STORE, None)
    if store is not None and store.updated:
        terminalreporter.write_line(f"secsuite: updated {len(store.updated)} baseline(s) in {store.path}")
