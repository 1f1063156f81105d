"""Classify images with a trained embedding model, or enroll a labelled folder as encodings.

    python test.py --weights RUN/model.keras --encodings RUN/encodings.npz --image IMG [IMG|DIR ...]
    python test.py --weights RUN/model.keras --enroll DIR --encodings OUT.npz

The model runs from train.py's LiteRT copy of model.keras when it is fresh (no TensorFlow
import: about a second instead of several), else from model.keras itself.
"""

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="a model.keras written by train.py")
    parser.add_argument("--encodings", required=True, help="encodings .npz to read (or, with --enroll, to write)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--image", nargs="+", help="images to classify: files or folders")
    action.add_argument("--enroll", metavar="DIR", help="labelled folder DIR/<class>/<image> to embed")
    action.add_argument("--data", metavar="DIR", help="labelled folder DIR/<class>/<image> to evaluate")
    parser.add_argument("--top-k", type=int, default=5, help="nearest classes to show (default: 5)")
    parser.add_argument("--threshold", type=float, help="distance above which a prediction is 'unknown' "
                        "(default: the one stored in the encodings, if any)")
    parser.add_argument("--output", metavar="CSV", help="also write one row per image to this CSV file")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per image)")
    parser.add_argument("--keras", action="store_true", help="run model.keras with TensorFlow even when "
                        "train.py's LiteRT copy (model.tflite, faster to start) is there")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from embedding_net.inference import encodings as enc
    from embedding_net.inference import prediction
    from embedding_net.errors import UserError
    from embedding_net.inference.litert import load_inference_model

    try:
        paths = prediction.collect_image_paths(args.image) if args.image else []
        model = load_inference_model(args.weights, prefer_litert=not args.keras)
        if args.enroll:
            result = enc.enroll_folder(model, args.enroll, metadata={"model": os.path.abspath(args.weights)})
            enc.save_encodings(args.encodings, result)
            summary = {"encodings": args.encodings, "images": len(result.labels), "classes": len(result.class_names)}
            print(json.dumps(summary) if args.json else
                  f"wrote {summary['images']} encodings of {summary['classes']} classes to {args.encodings}")
            return 0
        references = enc.load_encodings(args.encodings)
        enc.check_compatible(references, model, args.encodings)
        if args.data:
            metrics = prediction.evaluate_folder(model, references, args.data)
            print(json.dumps(metrics) if args.json else "\n".join(
                f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
            return 0
        threshold = args.threshold if args.threshold is not None else references.metadata.get("threshold")
        rows = prediction.predict_paths(model, references, paths, args.top_k, threshold)
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


if __name__ == "__main__":
    sys.exit(main())
