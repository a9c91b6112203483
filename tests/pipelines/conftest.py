"""Pipeline tests need diffusers' pipelines, which need transformers (no text encoder is
loaded, but the pipeline classes import it)."""

import pytest

pytest.importorskip("transformers")
