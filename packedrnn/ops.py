"""Compiled custom ops (torch.library). Filled in by the C++ extension."""


def available(device_type: str) -> bool:
    return False


def unavailable_reason(device_type: str) -> str:
    return "the compiled extension is not built yet"
