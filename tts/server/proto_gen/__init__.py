"""Generated protobuf and gRPC modules of ``proto/tts/v1/tts.proto`` (committed; see ``tts.server.codegen``)."""
