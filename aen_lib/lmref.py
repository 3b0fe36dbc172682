"""``python -m aen_lib.lmref``: the language-model sets' command under the name the committed sets' provenance records
(before the library's subpackages); it runs :func:`aen_lib.results.lmref.main` unchanged."""

from __future__ import annotations

if __name__ == "__main__":
    from aen_lib import configure_openmp

    configure_openmp()  # before aen_lib.results.lmref imports torch, or it has no effect
    from aen_lib.results.lmref import main

    raise SystemExit(main())
