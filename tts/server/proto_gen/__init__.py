"""Generated protobuf and gRPC modules of ``proto/tts/v1/tts.proto`` and NVIDIA Riva's
``proto/riva/proto/riva_{tts,audio,common}.proto`` (committed; see ``tts.server.codegen``)."""
