"""The ``blocks.blob`` API on stores users already run: ``blocks.blob.adapters.s3`` (any S3
store, through boto3). Import the store's module itself; this package imports nothing, so a
missing client library breaks nothing else."""

__all__: list[str] = []
