#!/usr/bin/env python3
"""Writes Inputs/functions-opset17.onnx: Inputs/gqa-opset17.onnx with ops
wrapped in model-local functions the way the PyTorch dynamo exporter writes
them (onnxscript's torch_lib: `pkg.onnxscript.torch_lib::aten_mul(self,
other)`, attributes passed by reference, functions that call functions).
No real dynamo export of a LLaMA could be reached from here (see
real/SOURCES.md), so this fixture has that form on a known model.

  /usr/bin/python3 test/Import/gen_functions_fixture.py [OUT_DIR]
Needs python3-onnx only.
"""
import os
import sys

import onnx
from onnx import helper

LIB = "pkg.onnxscript.torch_lib"
COMMON = "pkg.onnxscript.torch_lib.common"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "Inputs")
    m = onnx.load(os.path.join(here, "Inputs", "gqa-opset17.onnx"))
    opset = [helper.make_opsetid("", 17)]
    lib_opsets = opset + [helper.make_opsetid(COMMON, 1)]
    functions = [
        # aten_mul(self, other) = Mul
        helper.make_function(LIB, "aten_mul", ["self", "other"], ["return_val"],
                             [helper.make_node("Mul", ["self", "other"], ["return_val"], name="n0")],
                             opset),
        # aten_permute(self, dims) = Transpose(perm=dims), by reference
        helper.make_function(LIB, "aten_permute", ["self"], ["result"],
                             [helper.make_node("Transpose", ["self"], ["result"], name="n0")],
                             opset, ["dims"]),
        # common::Identity, called from aten_softmax: a nested call
        helper.make_function(COMMON, "Identity", ["x"], ["y"],
                             [helper.make_node("Identity", ["x"], ["y"], name="n0")], opset),
        helper.make_function(LIB, "aten_softmax", ["self"], ["result"],
                             [helper.make_node("Softmax", ["self"], ["tmp"], name="n0"),
                              helper.make_node("Identity", ["tmp"], ["result"], name="n1",
                                               domain=COMMON)],
                             lib_opsets, ["dim"]),
    ]
    # aten_permute's and aten_softmax's attributes refer to the call's.
    for f in functions:
        for n in f.node:
            if n.op_type == "Transpose":
                n.attribute.append(onnx.AttributeProto(name="perm", ref_attr_name="dims",
                                                       type=onnx.AttributeProto.INTS))
            if n.op_type == "Softmax":
                n.attribute.append(onnx.AttributeProto(name="axis", ref_attr_name="dim",
                                                       type=onnx.AttributeProto.INT))
    for i, n in enumerate(m.graph.node):
        if n.op_type == "Mul":
            n.op_type, n.domain = "aten_mul", LIB
        elif n.op_type == "Transpose":
            perm = next(a for a in n.attribute if a.name == "perm")
            perm.name = "dims"
            n.op_type, n.domain = "aten_permute", LIB
        elif n.op_type == "Softmax":
            axis = next(a for a in n.attribute if a.name == "axis")
            axis.name = "dim"
            n.op_type, n.domain = "aten_softmax", LIB
        n.name = "node_%s_%d" % (n.op_type, i)
    m.functions.extend(functions)
    m.opset_import.extend([helper.make_opsetid(LIB, 1), helper.make_opsetid(COMMON, 1)])
    m.producer_name = "sq gen_functions_fixture.py (dynamo form)"
    onnx.save_model(m, os.path.join(out, "functions-opset17.onnx"))

    # Broken: aten_mul calls itself.
    loop = onnx.ModelProto()
    loop.CopyFrom(m)
    f = next(f for f in loop.functions if f.name == "aten_mul")
    f.node[0].op_type, f.node[0].domain = "aten_mul", LIB
    onnx.save_model(loop, os.path.join(out, "broken", "recursive-function.onnx"))


if __name__ == "__main__":
    main()
