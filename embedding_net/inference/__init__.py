"""Inference without TensorFlow: encodings files (reference embeddings), enrolment of a
labelled folder, classification of image files, and the LiteRT copy of a trained model.

    from embedding_net.inference import load_encodings, load_inference_model, predict_paths
    model = load_inference_model("work_dirs/omniglot/model.keras")     # LiteRT when fresh
    rows = predict_paths(model, load_encodings("work_dirs/omniglot/encodings.npz"), ["a.png"])

`load_inference_model` falls back to Keras (and so TensorFlow) only when the model has no
fresh LiteRT copy.
"""

from embedding_net.inference.encodings import (
    Encodings, check_compatible, classify, embed_folder_images, embed_images, enroll_folder, load_encodings,
    make_encodings, model_image_shape, reference_encodings, save_encodings)
from embedding_net.inference.litert import LiteRTEmbeddingModel, fresh_litert_copy, load_inference_model
from embedding_net.inference.prediction import (
    collect_image_paths, evaluate_folder, predict_paths, write_predictions_csv)

__all__ = ["Encodings", "LiteRTEmbeddingModel", "check_compatible", "classify", "collect_image_paths",
           "embed_folder_images", "embed_images", "enroll_folder", "evaluate_folder", "fresh_litert_copy",
           "load_encodings", "load_inference_model", "make_encodings", "model_image_shape", "predict_paths",
           "reference_encodings", "save_encodings", "write_predictions_csv"]
