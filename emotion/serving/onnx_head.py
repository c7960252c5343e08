"""A scikit-learn head as an ONNX graph: the `normalize` stage, the adaptive head, its twin and the blend.

    features (clips, layers, width), speaker_mean, speaker_std (the same shape), weight (clips, 1)
      -> (features - speaker_mean) / speaker_std   -> the head's pipeline     -> adaptive (clips, classes)
      -> features                                  -> the twin's pipeline     -> twin (clips, classes)
      -> weight * adaptive + (1 - weight) * twin   -> probabilities (clips, classes)

Each pipeline is converted by skl2onnx (`LayerView` by the converter registered here); a calibrated SVM's
pipeline is first turned inside out (the calibration then wraps the SVM alone, as skl2onnx converts it). A
model that is not speaker-adaptive takes `features` alone. An adaptive head without a twin answers without the
speaker on the population's statistics, as `EmotionRecognizer.non_adaptive_probabilities` does.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline

from emotion.errors import ConfigError
from emotion.models.estimator import EstimatorHead, LayerView
from emotion.serving.onnx_encoder import OPSET

#: The ai.onnx.ml opset of the converted scikit-learn parts.
ML_OPSET = 3


def layer_view_shape(operator: Any) -> None:
    """skl2onnx's shape of a `LayerView`'s output: the rows it keeps (all layers, their mean, or one)."""
    from skl2onnx.common.data_types import FloatTensorType

    view, rows = operator.raw_operator, operator.inputs[0].type.shape
    kept = rows[1] if view.layers == "all" or view.num_layers == 1 else rows[1] // view.num_layers
    operator.outputs[0].type = FloatTensorType([rows[0], kept])


def convert_layer_view(scope: Any, operator: Any, container: Any) -> None:
    """A `LayerView` as ONNX nodes: Identity, or a reshape to (rows, layers, width) then their mean or one."""
    view, source, target = operator.raw_operator, operator.inputs[0].full_name, operator.outputs[0].full_name
    if view.layers == "all" or view.num_layers == 1:
        container.add_node("Identity", [source], [target], name=scope.get_unique_operator_name("LayerView"))
        return
    shape = scope.get_unique_variable_name("layers_shape")
    container.add_initializer(shape, TensorProto.INT64, [3], [0, view.num_layers, -1])
    stacked = scope.get_unique_variable_name("stacked")
    container.add_node("Reshape", [source, shape], [stacked], name=scope.get_unique_operator_name("Reshape"))
    if view.layers == "mean":
        axes = scope.get_unique_variable_name("axes")
        container.add_initializer(axes, TensorProto.INT64, [1], [1])
        container.add_node("ReduceMean", [stacked, axes], [target], keepdims=0,
                           name=scope.get_unique_operator_name("ReduceMean"))  # fmt: skip
        return
    index = scope.get_unique_variable_name("layer")
    container.add_initializer(index, TensorProto.INT64, [], [int(view.layers)])
    container.add_node("Gather", [stacked, index], [target], axis=1, name=scope.get_unique_operator_name("Gather"))


def register_layer_view() -> None:
    """Teach skl2onnx our `LayerView` step."""
    from skl2onnx import update_registered_converter

    update_registered_converter(LayerView, "EmotionLayerView", layer_view_shape, convert_layer_view)


def convertible(estimator: Any) -> Any:
    """The estimator as skl2onnx converts it: a calibrated pipeline becomes the pipeline's transforms followed by
    the calibration of its last step alone (the same probabilities)."""
    if not isinstance(estimator, CalibratedClassifierCV):
        return estimator
    calibrated = estimator.calibrated_classifiers_
    if len(calibrated) != 1 or not isinstance(calibrated[0].estimator, Pipeline):
        if all(not isinstance(c.estimator, Pipeline) for c in calibrated):
            return estimator
        raise ConfigError("only a calibrated head fitted once (ensemble=False) exports to ONNX")
    turned = copy.deepcopy(estimator)
    pipeline = turned.calibrated_classifiers_[0].estimator
    turned.calibrated_classifiers_[0].estimator = pipeline.steps[-1][1]
    turned.estimator = pipeline.steps[-1][1]
    return Pipeline([*pipeline.steps[:-1], ("calibrated", turned)])


def estimator_graph(estimator: Any, width: int, classes: int, prefix: str) -> onnx.GraphProto:
    """The estimator's probabilities of `{prefix}rows` (rows, width) as `{prefix}answer` (rows, classes):
    classes it never saw get 0, as `EstimatorHead` gives them."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    register_layer_view()
    model = convertible(estimator)
    converted = convert_sklearn(
        model,
        initial_types=[("rows", FloatTensorType([None, width]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    graph = onnx.compose.add_prefix(converted, prefix).graph
    seen = np.asarray(estimator.classes_, dtype=int)
    placement = np.zeros((len(seen), classes), dtype=np.float32)
    placement[np.arange(len(seen)), seen] = 1.0
    probabilities = next(o.name for o in graph.output if o.name.endswith("probabilities"))
    graph.initializer.append(numpy_helper.from_array(placement, f"{prefix}placement"))
    graph.node.append(helper.make_node("MatMul", [probabilities, f"{prefix}placement"], [f"{prefix}answer"]))
    del graph.output[:]
    return graph


def head_model(head: EstimatorHead, shape: tuple[int, int]) -> onnx.ModelProto:
    """The head's graph (see the module's docstring); `shape`: the (layers, width) of a clip's features."""
    if head.input_names != ("ssl",):
        raise ConfigError("only a head on an encoder's pooled layers (features=ssl) exports to ONNX")
    width, classes = shape[0] * shape[1], len(head.classes)
    adaptive = head.normalizer.adaptive
    inputs = [tensor("features", shape)]
    prepared = [helper.make_node("Reshape", ["features", "rows_shape"], ["rows"])]
    initializers = [numpy_helper.from_array(np.array([-1, width], dtype=np.int64), "rows_shape")]
    graphs = [estimator_graph(head.estimator, width, classes, "head_")]
    if adaptive:
        inputs += [tensor("speaker_mean", shape), tensor("speaker_std", shape), tensor("weight", (1,))]
        prepared += standardized("speaker_mean", "speaker_std", "head_rows", head.normalizer.scale)
        twin = head.fallback if head.fallback is not None else head.estimator
        graphs.append(estimator_graph(twin, width, classes, "twin_"))
        if head.fallback is None:
            prepared += standardized("population_mean", "population_std", "twin_rows", head.normalizer.scale)
            initializers += population_initializers(head)
        else:
            prepared.append(helper.make_node("Identity", ["rows"], ["twin_rows"]))
        answered = blended()
    else:
        prepared.append(helper.make_node("Identity", ["rows"], ["head_rows"]))
        answered = [helper.make_node("Identity", ["head_answer"], ["probabilities"])]
    nodes = [*prepared, *(node for graph in graphs for node in graph.node), *answered]
    initializers += [tensor for graph in graphs for tensor in graph.initializer]
    output = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["clips", classes])
    graph = helper.make_graph(nodes, "emotion_head", inputs, [output], initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="emotion-export")
    onnx.checker.check_model(model)
    return model


def tensor(name: str, shape: tuple[int, ...]) -> onnx.ValueInfoProto:
    """A float input of `shape` per clip."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["clips", *shape])


def standardized(mean: str, std: str, output: str, scale: str) -> list[onnx.NodeProto]:
    """Nodes standardising `features` by `mean` and `std` (`scale=mean`: centring only), as rows."""
    nodes = [helper.make_node("Sub", ["features", mean], [f"{output}_centred"])]
    last = f"{output}_centred"
    if scale == "mean_var":
        nodes.append(helper.make_node("Div", [last, std], [f"{output}_scaled"]))
        last = f"{output}_scaled"
    return [*nodes, helper.make_node("Reshape", [last, "rows_shape"], [output])]


def population_initializers(head: EstimatorHead) -> list[onnx.TensorProto]:
    """The training population's statistics (a head without a twin standardises by them without a speaker)."""
    population = head.normalizer.population
    mean, std = population.ssl_mean.numpy().astype(np.float32), population.ssl_std.numpy().astype(np.float32)
    return [numpy_helper.from_array(mean, "population_mean"), numpy_helper.from_array(std, "population_std")]


def blended() -> list[onnx.NodeProto]:
    """`weight * adaptive + (1 - weight) * twin`."""
    return [
        helper.make_node("Mul", ["weight", "head_answer"], ["weighted_adaptive"]),
        helper.make_node("Mul", ["weight", "twin_answer"], ["weighted_twin_part"]),
        helper.make_node("Sub", ["twin_answer", "weighted_twin_part"], ["weighted_twin"]),
        helper.make_node("Add", ["weighted_adaptive", "weighted_twin"], ["probabilities"]),
    ]
