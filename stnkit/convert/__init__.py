"""Any torch module to best-response form, in place, chosen by name patterns (as PEFT injects
adapters): the module's class and ``forward`` stay as they are.

::

    model = MyNet()
    converted = convert_module(model, ConvertSpec(), n_hyper=2, hyperparameters=["dropout", "weight_decay"])
    print(converted.report)
"""

from __future__ import annotations

from stnkit.convert.context import HyperContext
from stnkit.convert.convert import Conversion, ConvertedModel, convert_in_place, convert_module
from stnkit.convert.report import ConversionReport, ReportRow
from stnkit.convert.spec import ConvertSpec
from stnkit.errors import ConvertError

__all__ = [
    "Conversion",
    "ConversionReport",
    "ConvertError",
    "ConvertSpec",
    "ConvertedModel",
    "HyperContext",
    "ReportRow",
    "convert_in_place",
    "convert_module",
]
