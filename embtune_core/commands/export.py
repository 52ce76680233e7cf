"""``embtune export``: a fine-tuned model directory as one zip archive, written atomically."""

from __future__ import annotations

from embtune_core.commands import check_output_file
from embtune_core.publishing.export import export_zip

NAME = "export"
HELP = "zip a model directory, export it to ONNX (int8) for fast CPU inference, or push it to the hub"
DESCRIPTION = """Write MODEL_DIR (a sentence-transformers model directory, as `embtune train` makes) into one
zip archive. The archive holds a single top folder named after --out (model.zip -> model/), so unzipping
it gives a directory that SentenceTransformer(path) and DocsGPT (EMBEDDINGS_NAME=path) load as it is.
The archive appears complete or not at all.

--format onnx writes --out as a folder: the model plus onnx/model.onnx (and with --quantize int8
onnx/model_qint8_avx512_vnni.onnx), the layout SentenceTransformer(path, backend="onnx") reads; embtune
evaluate/mine/train-adapter use it with --backend onnx (see embtune_core/encoders/onnx_export.py).
--calibration DATASET (with --quantize int8) reads your own chunks (any dataset embtune reads, or a bare
corpus): it adds onnx/model_qint8_mixed.onnx, int8 with the channels that carry outliers on those chunks
kept in fp32, then measures every file on chunks calibration did not use (documents/s; NDCG@10 on the
dataset's questions about them, else cosine to fp32) and makes the fastest that holds quality (at most
0.005 NDCG@10 below fp32) the folder's default, saying which in one line (embtune_core/encoders/onnx_choice.py).
--push-to-hub OWNER/NAME uploads MODEL_DIR (or the ONNX folder just written) to the Hugging Face hub,
private unless --public, with the token from HF_TOKEN or `hf auth login`; --out is then optional.

examples:
  embtune export models/ft --out ft.zip
  embtune export models/ft --format onnx --quantize int8 --out models/ft-onnx
  embtune export models/ft --format onnx --quantize int8 --calibration my_chunks.jsonl --out models/ft-onnx
  embtune export models/ft --push-to-hub me/minilm-10k"""


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="sentence-transformers model directory")
    parser.add_argument("--out", help="zip archive (--format zip) or folder (--format onnx) to write")
    parser.add_argument("--format", choices=("zip", "onnx"), default="zip", help="zip (default) or onnx")
    parser.add_argument("--quantize", choices=("int8",), help="with --format onnx: also write a dynamic int8 model")
    parser.add_argument("--calibration", metavar="DATASET",
                        help="with --quantize int8: your chunks (a dataset or corpus file); adds the calibrated int8 "
                             "file and recommends the fastest file that holds quality on them")
    parser.add_argument("--push-to-hub", metavar="OWNER/NAME", help="upload to this Hugging Face hub repository")
    parser.add_argument("--public", action="store_true", help="with --push-to-hub: a public repository "
                                                             "(default: private)")


def run(args) -> int:
    from embtune_core.errors import UsageError

    if args.quantize and args.format != "onnx":
        raise UsageError("applies to --format onnx only", field="--quantize")
    calibration = None
    if getattr(args, "calibration", None):
        if args.quantize != "int8":
            raise UsageError("calibrates int8 quantisation: give --format onnx --quantize int8 with it",
                             field="--calibration")
        from embtune_core.encoders.onnx_choice import calibration_dataset

        calibration = calibration_dataset(args.calibration)  # a bad file is refused before minutes of export
    if not args.out and not args.push_to_hub:
        raise UsageError("give --out (or --push-to-hub)", field="--out")
    if args.push_to_hub:
        from embtune_core.publishing.hub import check_repo_id, resolve_token

        check_repo_id(args.push_to_hub)
        resolve_token()  # refuse before an export's minutes of work
    pushed = args.model_dir
    if args.out and args.format == "onnx":
        from embtune_core.commands import check_output_dir
        from embtune_core.encoders.onnx_export import export_onnx

        check_output_dir(args.out, "--out", replaces="modules.json")
        manifest = export_onnx(args.model_dir, args.out, quantize=args.quantize, calibration=calibration)
        print(f"{args.model_dir} -> {args.out} (" + ", ".join(f"{k}: {v}" for k, v in manifest["files"].items())
              + '); load it with SentenceTransformer(path, backend="onnx") or --backend onnx')
        if manifest.get("recommendation"):
            print(f"  {manifest['recommendation']['line']}; --backend onnx uses it (the folder's default)")
        elif args.quantize:
            print("  default: int8; --calibration YOUR_CHUNKS adds a calibrated int8 file and picks the fastest "
                  "that holds quality on them")
        pushed = args.out
    elif args.out:
        check_output_file(args.out, "--out")
        out = export_zip(args.model_dir, args.out)
        print(f"{args.model_dir} -> {out} ({out.stat().st_size} bytes)")
    if args.push_to_hub:
        from embtune_core.publishing.hub import push_folder

        result = push_folder(pushed, args.push_to_hub, private=not args.public)
        print(f"{pushed} -> {result['url']} ({'private' if result['private'] else 'public'}, "
              f"{len(result['files'])} files, commit {result['commit']})")
    return 0
