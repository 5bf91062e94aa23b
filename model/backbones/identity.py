"""Identity of the feature extractor that produced a set of snippet features."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class BackboneIdentity(BaseModel):
    """Recorded in every feature store and checkpoint, so a head is never served on another backbone's features.

    `weights` is the open_clip pretrained tag, the SHA-256 of a local checkpoint file, `random` for an untrained
    encoder, or a version string for weight-free descriptors.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    architecture: str
    weights: str
    dim: int
    text_branch: bool = False

    def key(self) -> str:
        text = "+text" if self.text_branch else ""
        return f"{self.name}:{self.architecture}:{self.weights}:{self.dim}{text}"

    def mismatch(self, other: BackboneIdentity) -> str | None:
        """A human-readable reason why features of `other` cannot feed a head trained on `self`, or None."""
        if self.key() == other.key():
            return None
        return (
            f"backbone mismatch: the model was trained on features of {self.key()} "
            f"but the configured backbone is {other.key()}"
        )
