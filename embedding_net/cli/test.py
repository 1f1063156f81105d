"""Classify images with a trained embedding model, enroll a labelled folder, or evaluate one.

`embedding-net test` and the repository's `python test.py` run this module:

    embedding-net test --weights RUN/model.keras --encodings RUN/encodings.enidx --image IMG [IMG|DIR ...]
    embedding-net test --weights RUN/model.keras --enroll DIR --encodings OUT.enidx [--append] [--backend B]
    embedding-net test --weights RUN/model.keras --encodings RUN/encodings.enidx --data DIR [--exact]

--encodings is a gallery: an index file (.enidx, memory-mapped, for galleries up to millions of
images; approximate `hnsw` from 200,000 images unless --exact) or an encodings file (.npz, the
old format, read into memory and searched exactly). --enroll into an .enidx embeds the folder in
bounded memory, resumes from OUT.enidx.parts/ after an interruption, and with --append adds to
the index under its writer lock. The model runs from train.py's LiteRT copy of model.keras when
it is fresh (no TensorFlow import: about a second instead of several), else from model.keras.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a model.keras written by train.py")
    parser.add_argument("--encodings", required=True, help="gallery to read (or, with --enroll, to write): "
                        "an index file .enidx, or an encodings file .npz")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--image", nargs="+", help="images to classify: files or folders")
    action.add_argument("--enroll", metavar="DIR", help="labelled folder DIR/<class>/<image> to embed")
    action.add_argument("--data", metavar="DIR", help="labelled folder DIR/<class>/<image> to evaluate")
    parser.add_argument("--top-k", type=int, default=5, help="nearest classes to show (default: 5)")
    parser.add_argument("--threshold", type=float, help="distance above which a prediction is 'unknown' "
                        "(default: the one stored in the gallery, if any)")
    parser.add_argument("--threshold-only", action="store_true", help="answer 'unknown' by the distance "
                        "threshold alone, not also beyond the nearest class's radius stored in the gallery")
    parser.add_argument("--exact", action="store_true", help="search an approximate index exactly "
                        "(its vectors copied into memory)")
    parser.add_argument("--append", action="store_true", help="with --enroll: add DIR to the existing index")
    parser.add_argument("--backend", help="with --enroll: index backend, exact, hnsw or usearch "
                        "(default: exact below 200,000 images, else hnsw)")
    parser.add_argument("--lock-timeout", type=float, default=60.0, metavar="S",
                        help="with --enroll: seconds to wait for another enrolment into the index (default: 60)")
    parser.add_argument("--output", metavar="CSV", help="also write one row per image to this CSV file")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per image)")
    parser.add_argument("--keras", action="store_true", help="run model.keras with TensorFlow even when "
                        "train.py's LiteRT copy (model.tflite, faster to start) is there")
    return parser.parse_args(argv)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from embedding_net.errors import UserError
    from embedding_net.inference import prediction
    from embedding_net.inference.enrolment import enroll
    from embedding_net.inference.gallery import open_gallery
    from embedding_net.inference.gallery_metrics import evaluate_folder_via_index
    from embedding_net.inference.litert import load_inference_model

    try:
        paths = prediction.collect_image_paths(args.image) if args.image else []
        model = load_inference_model(args.weights, prefer_litert=not args.keras)
        if args.enroll:
            summary = enroll(model, args.weights, args.enroll, args.encodings, args.append, args.backend,
                             args.lock_timeout)
            print(json.dumps(summary) if args.json else f"wrote {summary['images']} encodings of "
                  f"{summary['classes']} classes to {args.encodings} ({summary['added']} from {args.enroll})")
            return 0
        gallery = open_gallery(args.encodings, exact=args.exact, model=model, weights=args.weights)
        if args.data:
            metrics = (prediction.evaluate_folder(model, gallery.encodings, args.data) if gallery.encodings is not None
                       else evaluate_folder_via_index(model, gallery, args.data))
            print(json.dumps(metrics) if args.json else "\n".join(
                f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
            return 0
        threshold = args.threshold if args.threshold is not None else gallery.metadata.get("threshold")
        rows = prediction.predict_paths(model, gallery, paths, args.top_k, threshold,
                                        rejection=None if args.threshold_only else "stored")
        if args.output:
            prediction.write_predictions_csv(args.output, rows)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in rows:
        if args.json:
            print(json.dumps({"image": row["path"], "prediction": row["prediction"], "distance": row["distance"],
                              "nearest": [{"class": c, "distance": d} for c, d in row["nearest"]]}))
            continue
        print(f"{row['path']}: {row['prediction']} (distance {row['distance']:.4f})")
        for rank, (name, dist) in enumerate(row["nearest"], 1):
            print(f"  {rank}. {name}  {dist:.4f}")
    return 0
