"""Batched data augmentation on the array backend (NumPy or CuPy).

    from moco_ref.augment import make_pipeline, PIPELINES, CIFAR_MEAN, CIFAR_STD
    pipe = make_pipeline("v2", 32)                   # name in PIPELINES = ("v1", "v2", "cifar", "test")
    views = pipe(images_uint8, rng, "cupy")          # (N, H, W, 3) uint8 host -> (N, 3, 32, 32) float32

Every random parameter is drawn on the host from the ``numpy.random.Generator`` (``params.py``) and
moved to the device, so a seed gives the same views on NumPy and CuPy; the array work is batched over
the samples (no Python loop over images).  Calling the pipeline twice with the same generator gives
two independent views.

The building blocks work on float32 batches (N, 3, H, W) in [0, 1], planar (NCHW) rather than
channel-last, because NumPy is many times slower on an innermost axis of length 3 (see ``pipeline``).

Files: ``params`` (host draws), ``geometry`` (resized crop, flip), ``color`` (grayscale, jitter),
``blur`` (Gaussian blur), ``normalize``, ``transforms`` (draw + apply), ``pipeline`` (the recipes).

The ops follow torchvision's *tensor* definitions on float32 in [0, 1].  Differences, all of them:

1. Random streams: NumPy's generator, not torch's; the distributions are torchvision's, the numbers
   are not.  RandomResizedCrop draws all 10 tries per sample up front and keeps the first that fits
   (same distribution as torchvision's loop that stops there); RandomApply, RandomGrayscale and flip
   draw their Bernoulli for every sample, and ColorJitter draws factors even for samples it skips.
2. Resampling: bilinear with half-pixel centres (``align_corners=False``) but *no antialiasing*.
   torchvision's default ``antialias=True`` (and PIL's BILINEAR) filter wider when a crop box is larger
   than the output; when the box is no larger (always so for CIFAR's 32→32 crops) the results agree to
   float rounding.
3. Grayscale (RandomGrayscale, and inside contrast and saturation): luma 0.299·R + 0.587·G + 0.114·B
   (ITU-R 601-2, PIL's weights); torchvision's tensor ``rgb_to_grayscale`` uses 0.2989 for red.
4. The official MoCo code transforms PIL images: uint8 after every op, PIL's resampling, PIL's
   ImageEnhance (contrast blends with the mean luma rounded to an integer) and PIL's uint8 HSV for
   hue.  Here everything stays float32 from the first /255 to the end, as torchvision does on tensors
   — and the crop happens on the float image rather than on uint8.
5. Gaussian blur (v2): σ is used as PIL's ``GaussianBlur(radius=σ)`` uses it (radius = standard
   deviation), but as an exact Gaussian truncated at R = ceil(3·max σ of the batch) taps (at most
   side − 1) and renormalised, with reflect padding as torchvision pads.  PIL approximates it with
   three box blurs on uint8 and repeats the edge pixels; torchvision uses a fixed kernel size.
6. Colour jitter order: a random permutation of the four ops per sample, as torchvision draws
   ``randperm(4)`` per call (per image); no difference, but it is batched by gathering, for each
   position, the samples that have a given op there (see ``color.color_jitter``).
7. "test": the image is resized whole (no antialiasing) only when its side differs from image_size; a
   non-square image is cut to its central square first, which is Resize → CenterCrop up to where the
   sampling points fall.  For CIFAR's 32×32 test images it is Normalize only, exactly.
"""

from moco_ref.augment.normalize import CIFAR_MEAN, CIFAR_STD, denormalize, normalize
from moco_ref.augment.pipeline import PIPELINES, Pipeline, make_pipeline

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "PIPELINES", "Pipeline", "denormalize", "make_pipeline", "normalize"]
