"""Classify images with a trained embedding model, or enroll a labelled folder as encodings.

    python test.py --weights RUN/model.keras --encodings RUN/encodings.npz --image IMG [--json]
    python test.py --weights RUN/model.keras --enroll DIR --encodings OUT.npz
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
    action.add_argument("--image", help="the image to classify")
    action.add_argument("--enroll", metavar="DIR", help="labelled folder DIR/<class>/<image> to embed")
    parser.add_argument("--top-k", type=int, default=5, help="nearest classes to show (default: 5)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from embedding_net import encodings as enc
    from embedding_net.data import read_image
    from embedding_net.errors import UserError
    from embedding_net.models import load_embedding_model

    try:
        if args.image and not os.path.isfile(args.image):
            raise UserError(f"image not found: {args.image}")
        model = load_embedding_model(args.weights)
        if args.enroll:
            result = enc.enroll_folder(model, args.enroll, metadata={"model": os.path.abspath(args.weights)})
            enc.save_encodings(args.encodings, result)
            summary = {"encodings": args.encodings, "images": len(result.labels), "classes": len(result.class_names)}
            print(json.dumps(summary) if args.json else
                  f"wrote {summary['images']} encodings of {summary['classes']} classes to {args.encodings}")
            return 0
        references = enc.load_encodings(args.encodings)
        enc.check_compatible(references, model, args.encodings)
        height, width, channels = enc.model_image_shape(model)
        image = read_image(args.image, (height, width), channels)
        distance = references.metadata.get("distance", "euclidean")
        nearest = enc.classify(enc.embed_images(model, image[None]), references, args.top_k, distance)[0]
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"image": args.image, "prediction": nearest[0][0], "distance": nearest[0][1],
                          "nearest": [{"class": c, "distance": d} for c, d in nearest]}))
    else:
        print(f"{args.image}: {nearest[0][0]} (distance {nearest[0][1]:.4f})")
        for rank, (name, dist) in enumerate(nearest, 1):
            print(f"  {rank}. {name}  {dist:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
