"""What the lock records per image (plain data, no I/O): the catalog carries it once applied."""

from __future__ import annotations

from pydantic import Field

from slm_deploy.spec import CpuArch, Frozen

DIGEST = r"^sha256:[0-9a-f]{64}$"


class PlatformDigests(Frozen):
    manifest: str = Field(pattern=DIGEST)
    config: str = Field(pattern=DIGEST, description="The image config digest: `docker image inspect` Id.")


class LockEntry(Frozen):
    digest: str = Field(pattern=DIGEST, description="What the tag pointed at: the index, or the only manifest.")
    media_type: str
    platforms: dict[str, PlatformDigests]
    resolved: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

    def for_arch(self, arch: CpuArch) -> PlatformDigests | None:
        return self.platforms.get(f"linux/{arch.value}")
