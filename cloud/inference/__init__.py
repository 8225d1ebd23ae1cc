"""The cloud's inference service: the latest model version answering over HTTP and MQTT v5."""

from fedstream.cloud.inference._tally import Latency
from fedstream.cloud.inference.batcher import Answer, BatcherParams, MicroBatcher
from fedstream.cloud.inference.server import InferenceServer
from fedstream.cloud.inference.serving import EvalSet, ModelPreparer, ServedModel

__all__ = ["Answer", "BatcherParams", "EvalSet", "InferenceServer", "Latency", "MicroBatcher",
           "ModelPreparer", "ServedModel"]
