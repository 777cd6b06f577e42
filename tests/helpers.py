"""Checks shared by the unit tests of several dlmed modules."""

import inspect
import runpy


def assert_import_has_no_side_effects(module, expected_name, tmp_path, monkeypatch):
    """Running ``module``'s top-level code afresh creates no folder (data directory or home)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DLMED_DATA", str(tmp_path / "data"))
    # run_path executes the module afresh without replacing the imported one (a reload would
    # give its exception classes new identities under the other tests' feet).
    namespace = runpy.run_path(module.__file__)
    assert expected_name in namespace, f"{module.__name__}: expected {expected_name} defined, got {sorted(namespace)[:10]}..."
    assert not (tmp_path / "data").exists(), f"importing {module.__name__} created the data directory"
    assert list(home.iterdir()) == [], f"importing {module.__name__} wrote into the home folder"


def assert_public_api_documented(module, minimum):
    """Every public function and class defined in ``module`` has a docstring (and there are ``minimum`` or more)."""
    public = [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]
    assert len(public) >= minimum, f"{module.__name__}: expected at least {minimum} public names, got {len(public)}"
    undocumented = [obj.__name__ for obj in public if not (obj.__doc__ or "").strip()]
    assert undocumented == [], f"{module.__name__}: public names without a docstring: {undocumented}"
