"""What a trained network looks at: Grad-CAM.

Lab 2 has students write Grad-CAM themselves (its Exercise 5); later labs use this
implementation, which computes the same map, to ask what a network learnt.
"""

import torch


def grad_cam(model: torch.nn.Module, target_layer: torch.nn.Module, image: torch.Tensor, class_index: int) -> torch.Tensor:
    """Return the Grad-CAM map (Selvaraju et al. 2017) of one image for one class.

    With ``A`` the output of ``target_layer`` for the image, shape (K, h, w): the gradient of
    the class's logit with respect to ``A`` is averaged over the h x w positions (one weight
    per feature map), the map is ``ReLU(sum_k weight_k * A_k)`` and is divided by its maximum
    when that is positive, so it lies in [0, 1].

    Args:
        model: returns logits (1, num_classes) for a batch of one image; it is put in eval mode.
        target_layer: a submodule of ``model`` whose output for one image is (1, K, h, w).
        image: tensor (C, H, W) on the model's device.
        class_index: the class whose logit is explained.

    Returns:
        Float tensor (h, w) on the CPU with values in [0, 1]. No hook stays on the model.
    """
    captured = {}

    def keep_activations(module, inputs, output):
        captured["activations"] = output

    handle = target_layer.register_forward_hook(keep_activations)
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(image.unsqueeze(0))
            if "activations" not in captured:
                raise ValueError("target_layer was not used by the model's forward pass; pass one of its submodules")
            gradient, = torch.autograd.grad(logits[0, class_index], captured["activations"])
    finally:
        handle.remove()
    activations = captured["activations"][0].detach()
    weights = gradient[0].mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * activations).sum(dim=0))
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).float().cpu()
