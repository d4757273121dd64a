package io.twinengine.bench.kstreams;

import java.util.List;

/** Just enough JSON writing for the dump and the result line. */
final class Json {
  private Json() {}

  static String str(String s) {
    StringBuilder b = new StringBuilder(s.length() + 2).append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"':
          b.append("\\\"");
          break;
        case '\\':
          b.append("\\\\");
          break;
        case '\n':
          b.append("\\n");
          break;
        case '\r':
          b.append("\\r");
          break;
        case '\t':
          b.append("\\t");
          break;
        default:
          if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
          else b.append(c);
      }
    }
    return b.append('"').toString();
  }

  static String strs(List<String> l) {
    StringBuilder b = new StringBuilder("[");
    for (int i = 0; i < l.size(); i++) {
      if (i > 0) b.append(',');
      b.append(str(l.get(i)));
    }
    return b.append(']').toString();
  }

  static String num(double d) {
    if (Double.isNaN(d) || Double.isInfinite(d)) return "null";
    return Double.toString(d);
  }
}
