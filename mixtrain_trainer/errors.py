"""Errors a user can act on. Each carries one line that says what is wrong and how to fix it."""


class MixtrainError(Exception):
    """Base class: the CLI prints ``str(err)`` as one line and exits with status 2."""


class ConfigError(MixtrainError):
    """A run or sweep configuration is malformed."""


class DataError(MixtrainError):
    """A data set is missing or unusable."""


class NonFiniteLossError(MixtrainError):
    """Training produced a NaN or infinite loss; retrying would not help."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(f"non-finite loss at epoch {epoch} step {step}")

    def __reduce__(self):  # keeps epoch/step across pickling (Ray ships errors between processes)
        return (NonFiniteLossError, (self.epoch, self.step))
