"""Unlearnable datasets: CUDA class-wise convolutional protection and its evaluation protocol."""

from attacks.unlearnable.cuda import CUDA, write_dataset
from attacks.unlearnable.evaluate import TrainingRecipe, train_and_test, train_model

__all__ = ["CUDA", "TrainingRecipe", "train_and_test", "train_model", "write_dataset"]
