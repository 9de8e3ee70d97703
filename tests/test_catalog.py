# SPDX-License-Identifier: BSD-3-Clause
"""``hwq models`` answers from a torch-free catalog; the catalog must equal the registries."""

from __future__ import annotations

import json
import subprocess
import sys

from hwq import catalog
from hwq.cli import main


def test_catalog_equals_the_registries():
    from hwq.data import DATASETS
    from hwq.models import MODELS
    from hwq.quant import FAMILIES

    assert set(catalog.MODELS) == set(MODELS)
    assert list(catalog.DATASETS) == list(DATASETS)
    assert set(catalog.FAMILIES) == set(FAMILIES)
    for name, (_, wbits, abits) in catalog.FAMILIES.items():
        assert wbits == tuple(FAMILIES[name].weight_bits) and abits == tuple(FAMILIES[name].act_bits), name


def test_hwq_models_is_a_table_and_json_and_imports_no_torch():
    code = ("import sys; from hwq.cli import main; main(['models']); main(['models', '--json']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    table, rest = out.split("{", 1)
    assert "mobilenet_tiny" in table and "n2uq             1-8    1-4" in table
    data = json.loads("{" + rest.rsplit("}", 1)[0] + "}")
    assert data["quant"]["bitat"]["wbits"] == [1] and "cifar10" in data["datasets"]
    assert out.strip().endswith("NO-TORCH")


def test_version(capsys):
    import hwq

    try:
        main(["--version"])
    except SystemExit as stop:
        assert stop.code == 0
    assert capsys.readouterr().out.strip() == f"hwq {hwq.__version__}"
