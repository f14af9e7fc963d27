"""Never runs: the config is rejected before the backend loads this file.

Present so the failure is about the config, not a missing model file.
"""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        error = pb_utils.TritonError("invalid_config must never load")
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
