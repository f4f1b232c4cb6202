"""Images prepared once (`gankit data prepare`) and the `prepared` dataset that reads them."""

from gankit.components.prepared import dataset

__all__ = ["dataset"]
