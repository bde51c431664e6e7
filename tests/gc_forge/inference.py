"""
An algorithm laid out as grand-challenge-forge 0.7.5 generates one for a CT-in, segmentation-out task:
read the one image below /input/images/ct, read resources baked into the image and the model that
grand-challenge extracts at /opt/ml/model, write /output/images/<slug>/output.mha.

Like the generated template, it writes its output with SimpleITK.GetImageFromArray and nothing else:
spacing 1, origin 0, identity direction. Arena accepts that only for tasks whose output declares
`geometry: adopt-default` (then the input's geometry is adopted, with a warning in the case log).

tests/test_gc_compat.py runs it unchanged through a real submission.
"""

from glob import glob
from pathlib import Path
import json

import numpy
import SimpleITK

INPUT_PATH = Path("/input")
OUTPUT_PATH = Path("/output")
RESOURCE_PATH = Path("resources")
MODEL_PATH = Path("/opt/ml/model")


def run():
    # Read the input
    input_ct_image = load_image_file_as_array(location=INPUT_PATH / "images/ct")

    # Process the inputs: any way you'd like
    _show_torch_cuda_info()
    with open(RESOURCE_PATH / "some_resource.txt", "r") as f:
        print(f.read())
    # The model tarball uploaded beside the image is extracted here, read-only
    with open(MODEL_PATH / "a_tarball_subdirectory" / "some_tarball_resource.txt", "r") as f:
        print(f.read())
    with open(MODEL_PATH / "a_tarball_subdirectory" / "model.json", "r") as f:
        model = json.load(f)

    # A "model": every voxel above the model's HU threshold gets the model's label
    output_oar_segmentation = numpy.where(input_ct_image > model["threshold_hu"], model["label"], 0).astype(numpy.uint8)

    # Save your output
    write_array_as_image_file(location=OUTPUT_PATH / "images/oar-segmentation", array=output_oar_segmentation)
    return 0


def load_image_file_as_array(*, location):
    # Use SimpleITK to read a file
    input_files = glob(str(location / "*.tif")) + glob(str(location / "*.tiff")) + glob(str(location / "*.mha"))
    result = SimpleITK.ReadImage(input_files[0])

    # Convert it to a Numpy array
    return SimpleITK.GetArrayFromImage(result)


def write_array_as_image_file(*, location, array):
    location.mkdir(parents=True, exist_ok=True)

    # You may need to change the suffix to .tif to match the expected output
    suffix = ".mha"

    image = SimpleITK.GetImageFromArray(array)
    SimpleITK.WriteImage(image, location / f"output{suffix}", useCompression=True)


def _show_torch_cuda_info():
    try:
        import torch
    except ImportError:
        print("=+=" * 10 + "\nPyTorch is not installed in this image\n" + "=+=" * 10)
        return
    print("=+=" * 10)
    print("Collecting Torch CUDA information")
    print(f"Torch CUDA is available: {(available := torch.cuda.is_available())}")
    if available:
        print(f"\tnumber of devices: {torch.cuda.device_count()}")
    print("=+=" * 10)


if __name__ == "__main__":
    raise SystemExit(run())
