# Rewrites proto3 `optional T name = N;` as `oneof _name { T name = N; }`,
# the exact equivalent protoc uses internally (a synthetic oneof), so that
# protoc-c 1.4, which predates proto3 optional, can generate C code for it.
# Usage: cmake -DIN=file.proto -DOUT=copy.proto -P proto3_optional.cmake
file(READ "${IN}" text)
string(REGEX REPLACE
  "\n([ \t]*)optional[ \t]+([A-Za-z0-9_.]+)[ \t]+([A-Za-z0-9_]+)[ \t]*=[ \t]*([0-9]+)[ \t]*;"
  "\n\\1oneof _\\3 { \\2 \\3 = \\4; }" text "${text}")
file(WRITE "${OUT}" "${text}")
