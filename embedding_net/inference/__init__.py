"""Inference without TensorFlow: a run's `Classifier` (three lines from Python), galleries
(`.npz` encodings or `.enidx` index files), enrolment of a labelled folder (streamed and
resumable into an index), classification of image files, metrics of a labelled folder, and the
LiteRT copy of a trained model.

    from embedding_net.inference import Classifier
    classifier = Classifier.load("work_dirs/omniglot")                  # model, gallery, threshold
    prediction = classifier.classify("query.png")                      # or an image array

    from embedding_net.inference import load_encodings, load_inference_model, predict_paths
    model = load_inference_model("work_dirs/omniglot/model.keras")     # LiteRT when fresh
    rows = predict_paths(model, open_gallery("work_dirs/omniglot/encodings.enidx"), ["a.png"])

`load_inference_model` falls back to Keras (and so TensorFlow) only when the model has no
fresh LiteRT copy.
"""

from embedding_net.inference.classifier import Classifier, Prediction
from embedding_net.inference.encodings import (
    Encodings, check_compatible, classify, embed_folder_images, embed_images, enroll_folder, load_encodings,
    make_encodings, model_image_shape, reference_encodings, save_encodings)
from embedding_net.inference.enrolment import enroll
from embedding_net.inference.gallery import Gallery, choose_backend, open_gallery, save_encodings_index
from embedding_net.inference.gallery_metrics import evaluate_folder_via_index
from embedding_net.inference.streaming import embed_folder_streaming, read_part
from embedding_net.inference.litert import LiteRTEmbeddingModel, fresh_litert_copy, load_inference_model
from embedding_net.inference.prediction import (
    collect_image_paths, evaluate_folder, predict_paths, write_predictions_csv)

__all__ = ["Classifier", "Encodings", "Gallery", "Prediction", "LiteRTEmbeddingModel", "check_compatible", "choose_backend", "classify",
           "collect_image_paths", "embed_folder_images", "embed_folder_streaming", "embed_images", "enroll",
           "enroll_folder", "evaluate_folder", "evaluate_folder_via_index", "fresh_litert_copy",
           "load_encodings", "load_inference_model", "make_encodings", "model_image_shape", "open_gallery",
           "predict_paths", "read_part", "reference_encodings", "save_encodings", "save_encodings_index",
           "write_predictions_csv"]
