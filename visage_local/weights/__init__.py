"""The weights moved: seeded random directions and the tensors they move (``directions``),
finetune and LoRA directions (``interpolation``), theta + a*d1 + b*d2 per tensor with the
displacement applied (``perturb``), and the per-tensor view ``inspect`` prints
(``inspection``)."""
