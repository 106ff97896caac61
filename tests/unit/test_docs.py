"""The configuration reference lists every backend option (it is generated from them)."""

from pathlib import Path

import pytest

from backends.filesystem import FilesystemOptions
from backends.options import describe_options
from backends.rados import RadosOptions
from backends.s3 import S3Options

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("options", [FilesystemOptions, S3Options, RadosOptions])
def test_configuration_reference_lists_every_option(options):
    text = (DOCS / "configuration.md").read_text()
    for name, default, _ in describe_options(options):
        assert f"| `{name}` | `{default!r}` |" in text, name
