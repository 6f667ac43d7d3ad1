"""The descriptor pool of the generated Riva modules (hand-written; see ``tts.server.codegen``).

NVIDIA's ``riva/proto/*.proto`` files are registered here rather than in protobuf's default
pool, so this server and ``nvidia-riva-client`` (which registers its own revision of the same
files and ``nvidia.riva.*`` names in the default pool) can be imported by one process.
"""

from google.protobuf import descriptor_pool

#: Holds ``riva/proto/riva_common.proto``, ``riva_audio.proto`` and ``riva_tts.proto``.
POOL = descriptor_pool.DescriptorPool()
