package dev.gridmesh.client;

import com.google.protobuf.ListValue;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code google.protobuf.Struct}, the type of a task's params and an event's payload, from and to
 * plain Java maps.
 */
public final class Structs {
  /** 2^53: up to this, a double holds every integer exactly. */
  private static final double EXACT = 9007199254740992.0;

  private Structs() {}

  /**
   * A Struct of the map: its values may be null, Strings, Booleans, Numbers, Maps with String keys
   * and Lists (Iterables) of these, as in JSON.
   *
   * @throws IllegalArgumentException for any other value, naming its key
   */
  public static Struct of(Map<String, ?> map) {
    Struct.Builder struct = Struct.newBuilder();
    map.forEach((key, value) -> struct.putFields(key, value(key, value)));
    return struct.build();
  }

  /** A Value of one JSON value (as {@link #of} takes them). */
  public static Value value(Object value) {
    return value("value", value);
  }

  /**
   * The map a Struct holds, in its order: numbers with no fraction become {@code Long}s (42, not
   * 42.0), since a Struct keeps every number as a double while JSON users wrote and expect
   * integers; other numbers stay {@code Double}s.
   */
  public static Map<String, Object> toMap(Struct struct) {
    Map<String, Object> map = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((key, value) -> map.put(key, toJava(value)));
    return map;
  }

  /** The plain Java value of a Value (as {@link #toMap} gives them). */
  public static Object toJava(Value value) {
    switch (value.getKindCase()) {
      case NUMBER_VALUE:
        double n = value.getNumberValue();
        if (n == Math.rint(n) && Math.abs(n) <= EXACT) {
          return (long) n;
        }
        return n;
      case STRING_VALUE:
        return value.getStringValue();
      case BOOL_VALUE:
        return value.getBoolValue();
      case STRUCT_VALUE:
        return toMap(value.getStructValue());
      case LIST_VALUE:
        List<Object> items = new ArrayList<>();
        for (Value item : value.getListValue().getValuesList()) {
          items.add(toJava(item));
        }
        return items;
      default: // NULL_VALUE, or a Value with no kind set
        return null;
    }
  }

  private static Value value(String path, Object value) {
    if (value == null) {
      return Value.newBuilder().setNullValue(NullValue.NULL_VALUE).build();
    }
    if (value instanceof String s) {
      return Value.newBuilder().setStringValue(s).build();
    }
    if (value instanceof Boolean b) {
      return Value.newBuilder().setBoolValue(b).build();
    }
    if (value instanceof Number n) {
      return Value.newBuilder().setNumberValue(n.doubleValue()).build();
    }
    if (value instanceof Map<?, ?> m) {
      Struct.Builder struct = Struct.newBuilder();
      for (Map.Entry<?, ?> entry : m.entrySet()) {
        if (!(entry.getKey() instanceof String key)) {
          throw new IllegalArgumentException(path + ": a Struct's keys are strings, not " + entry.getKey());
        }
        struct.putFields(key, value(path + "." + key, entry.getValue()));
      }
      return Value.newBuilder().setStructValue(struct).build();
    }
    if (value instanceof Iterable<?> items) {
      ListValue.Builder list = ListValue.newBuilder();
      int i = 0;
      for (Object item : items) {
        list.addValues(value(path + "[" + i++ + "]", item));
      }
      return Value.newBuilder().setListValue(list).build();
    }
    throw new IllegalArgumentException(
        path + ": a " + value.getClass().getName() + " is no JSON value (null, String, Boolean, Number, Map, List)");
  }
}
