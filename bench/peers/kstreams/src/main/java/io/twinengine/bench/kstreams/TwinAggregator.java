package io.twinengine.bench.kstreams;

import io.twinengine.bench.kstreams.proto.Doubles;
import io.twinengine.bench.kstreams.proto.PeerTwin;
import io.twinengine.bench.kstreams.proto.Scalar;
import io.twinengine.bench.kstreams.proto.Stage;
import io.twinengine.bench.kstreams.proto.Strings;
import io.twinengine.bench.kstreams.proto.Text;
import io.twinengine.v1.Envelope;
import io.twinengine.v1.LifecycleEvent;
import io.twinengine.v1.LifecycleKind;
import io.twinengine.v1.Telemetry;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * The per-product reduction, a pure function (twin, envelope) -> twin used as
 * the KTable's Aggregator. It mirrors the core of twin-engine's reducer
 * (twin-engine/core/reducer.c), simplified where the brief says so:
 *
 * <ul>
 *   <li>dedupe per (product, source) by a plain high-water mark: seq <= hwm is a duplicate and is
 *       dropped (twin-engine keeps a sliding window and accepts late seqs inside it);
 *   <li>telemetry: each field last-writer-wins by (event_time_ms, seq); metrics per key;
 *   <li>lifecycle: the stage machine with the same transition checks as twin-engine; impossible
 *       events are counted as rejected (twin-engine also keeps them in a timeline).
 * </ul>
 *
 * <p>Not done (twin-engine does them): the lifecycle timeline, battery-health and brake-wear
 * statistics, maintenance alerts, the DLQ.
 */
final class TwinAggregator {
  private TwinAggregator() {}

  static PeerTwin apply(PeerTwin twin, Envelope env) {
    long hwm = twin.getSourceHwmOrDefault(env.getSource(), 0L);
    long seq = env.getSeq();
    if (Long.compareUnsigned(seq, hwm) <= 0) {
      return twin.toBuilder().setDuplicates(twin.getDuplicates() + 1).build();
    }
    PeerTwin.Builder b = twin.toBuilder().putSourceHwm(env.getSource(), seq);
    boolean applied;
    switch (env.getPayloadCase()) {
      case TELEMETRY:
        telemetry(b, env.getTelemetry(), env.getEventTimeMs(), seq);
        b.setTelemetry(b.getTelemetry() + 1);
        applied = true;
        break;
      case LIFECYCLE:
        applied = lifecycle(b, env.getLifecycle(), env.getEventTimeMs());
        if (applied) b.setLifecycle(b.getLifecycle() + 1);
        else b.setRejected(b.getRejected() + 1);
        break;
      default:
        b.setRejected(b.getRejected() + 1);
        applied = false;
    }
    if (applied && env.getEventTimeMs() > b.getLastEventMs()) b.setLastEventMs(env.getEventTimeMs());
    return b.build();
  }

  // ---- Telemetry -------------------------------------------------------------

  /** True when a sample stamped (at, seq) replaces one stamped (heldAt, heldSeq). */
  private static boolean newer(boolean held, long heldAt, long heldSeq, long at, long seq) {
    if (!held) return true;
    if (at != heldAt) return at > heldAt;
    return Long.compareUnsigned(seq, heldSeq) > 0;
  }

  private static boolean newer(boolean held, Scalar s, long at, long seq) {
    return newer(held, s.getAtMs(), s.getSeq(), at, seq);
  }

  private static Scalar scalar(double v, long at, long seq) {
    return Scalar.newBuilder().setValue(v).setAtMs(at).setSeq(seq).build();
  }

  private static void telemetry(PeerTwin.Builder b, Telemetry t, long at, long seq) {
    if (t.hasOdometerKm() && newer(b.hasOdometerKm(), b.getOdometerKm(), at, seq))
      b.setOdometerKm(scalar(t.getOdometerKm(), at, seq));
    if (t.hasSpeedKph() && newer(b.hasSpeedKph(), b.getSpeedKph(), at, seq))
      b.setSpeedKph(scalar(t.getSpeedKph(), at, seq));
    if (t.hasBatterySocPct() && newer(b.hasBatterySocPct(), b.getBatterySocPct(), at, seq))
      b.setBatterySocPct(scalar(t.getBatterySocPct(), at, seq));
    if (t.hasBatterySohPct() && newer(b.hasBatterySohPct(), b.getBatterySohPct(), at, seq))
      b.setBatterySohPct(scalar(t.getBatterySohPct(), at, seq));
    if (t.hasBatteryTempC() && newer(b.hasBatteryTempC(), b.getBatteryTempC(), at, seq))
      b.setBatteryTempC(scalar(t.getBatteryTempC(), at, seq));
    if (t.hasLatitude() && newer(b.hasLatitude(), b.getLatitude(), at, seq))
      b.setLatitude(scalar(t.getLatitude(), at, seq));
    if (t.hasLongitude() && newer(b.hasLongitude(), b.getLongitude(), at, seq))
      b.setLongitude(scalar(t.getLongitude(), at, seq));
    if (t.hasFuelLevelPct() && newer(b.hasFuelLevelPct(), b.getFuelLevelPct(), at, seq))
      b.setFuelLevelPct(scalar(t.getFuelLevelPct(), at, seq));
    if (t.hasAuxBatteryV() && newer(b.hasAuxBatteryV(), b.getAuxBatteryV(), at, seq))
      b.setAuxBatteryV(scalar(t.getAuxBatteryV(), at, seq));
    if (t.hasAmbientTempC() && newer(b.hasAmbientTempC(), b.getAmbientTempC(), at, seq))
      b.setAmbientTempC(scalar(t.getAmbientTempC(), at, seq));
    if (t.hasRangeKm() && newer(b.hasRangeKm(), b.getRangeKm(), at, seq))
      b.setRangeKm(scalar(t.getRangeKm(), at, seq));
    if (t.getTirePressureKpaCount() > 0) {
      Doubles h = b.getTirePressureKpa();
      if (newer(b.hasTirePressureKpa(), h.getAtMs(), h.getSeq(), at, seq))
        b.setTirePressureKpa(
            Doubles.newBuilder()
                .addAllV(t.getTirePressureKpaList())
                .setAtMs(at)
                .setSeq(seq)
                .build());
    }
    if (t.getBrakePadMmCount() > 0) {
      Doubles h = b.getBrakePadMm();
      if (newer(b.hasBrakePadMm(), h.getAtMs(), h.getSeq(), at, seq))
        b.setBrakePadMm(
            Doubles.newBuilder().addAllV(t.getBrakePadMmList()).setAtMs(at).setSeq(seq).build());
    }
    if (t.getDtcCodesCount() > 0 || t.getDtcCodesReported()) {
      Strings h = b.getDtcCodes();
      if (newer(b.hasDtcCodes(), h.getAtMs(), h.getSeq(), at, seq))
        b.setDtcCodes(
            Strings.newBuilder()
                .addAllV(new TreeSet<>(t.getDtcCodesList()))
                .setAtMs(at)
                .setSeq(seq)
                .build());
    }
    if (t.hasFirmwareVersion()) {
      Text h = b.getFirmwareVersion();
      if (newer(b.hasFirmwareVersion(), h.getAtMs(), h.getSeq(), at, seq))
        b.setFirmwareVersion(
            Text.newBuilder().setV(t.getFirmwareVersion()).setAtMs(at).setSeq(seq).build());
    }
    if (t.getMetricsCount() > 0) {
      for (Map.Entry<String, Double> m : t.getMetricsMap().entrySet()) {
        Scalar h = b.getMetricsOrDefault(m.getKey(), null);
        if (h == null || newer(true, h, at, seq))
          b.putMetrics(m.getKey(), scalar(m.getValue(), at, seq));
      }
    }
  }

  // ---- Lifecycle -------------------------------------------------------------

  /** Null when the event may apply in the twin's state, else why not (twin-engine's checks). */
  static String check(PeerTwin.Builder b, LifecycleEvent lc) {
    Stage s = b.getStage();
    if (s == Stage.DECOMMISSIONED) return "decommissioned";
    switch (lc.getKind()) {
      case ORDERED:
        return s == Stage.NONE ? null : "already ordered";
      case BUILD_STARTED:
        return (s == Stage.NONE || s == Stage.ORDERED) ? null : "BUILD_STARTED requires ORDERED";
      case BUILD_STEP_COMPLETED:
      case QUALITY_GATE_PASSED:
      case QUALITY_GATE_FAILED:
        return s == Stage.IN_PRODUCTION ? null : "requires IN_PRODUCTION";
      case BUILD_COMPLETED:
        if (s != Stage.IN_PRODUCTION) return "BUILD_COMPLETED requires IN_PRODUCTION";
        return b.getQualityHold() ? "quality hold" : null;
      case SHIPPED:
        return (s == Stage.BUILT || s == Stage.AT_DEALER) ? null : "SHIPPED requires BUILT/AT_DEALER";
      case ARRIVED_AT_DEALER:
        return s == Stage.IN_TRANSIT ? null : "ARRIVED_AT_DEALER requires IN_TRANSIT";
      case DELIVERED:
        if (s != Stage.AT_DEALER && s != Stage.IN_TRANSIT) return "DELIVERED not shipped";
        return lc.getOwnerId().isEmpty() ? "no owner" : null;
      case SERVICE_VISIT:
      case WARRANTY_CLAIM:
        return s == Stage.IN_SERVICE ? null : "requires IN_SERVICE";
      case OWNERSHIP_TRANSFERRED:
        if (s != Stage.IN_SERVICE) return "requires IN_SERVICE";
        return lc.getOwnerId().isEmpty() ? "no owner" : null;
      case RECALL_ISSUED:
        if (s.getNumber() < Stage.BUILT.getNumber()) return "not built";
        if (lc.getRecallId().isEmpty()) return "no recall_id";
        return b.getOpenRecallsList().contains(lc.getRecallId()) ? "already open" : null;
      case RECALL_COMPLETED:
        if (lc.getRecallId().isEmpty()) return "no recall_id";
        return b.getOpenRecallsList().contains(lc.getRecallId()) ? null : "recall not open";
      case DECOMMISSIONED:
        return null;
      default:
        return "unknown kind";
    }
  }

  /** Applies lc when possible; returns false when it was rejected. */
  private static boolean lifecycle(PeerTwin.Builder b, LifecycleEvent lc, long at) {
    if (check(b, lc) != null) return false;
    if (!lc.getModel().isEmpty()) b.setModel(lc.getModel());
    LifecycleKind k = lc.getKind();
    switch (k) {
      case ORDERED:
        b.setStage(Stage.ORDERED);
        break;
      case BUILD_STARTED:
        b.setStage(Stage.IN_PRODUCTION);
        break;
      case QUALITY_GATE_PASSED:
        b.setQualityHold(false);
        break;
      case QUALITY_GATE_FAILED:
        b.setQualityHold(true);
        break;
      case BUILD_COMPLETED:
        b.setStage(Stage.BUILT);
        break;
      case SHIPPED:
        b.setStage(Stage.IN_TRANSIT);
        break;
      case ARRIVED_AT_DEALER:
        b.setStage(Stage.AT_DEALER);
        break;
      case DELIVERED:
        b.setStage(Stage.IN_SERVICE).setOwner(lc.getOwnerId());
        break;
      case OWNERSHIP_TRANSFERRED:
        b.setOwner(lc.getOwnerId());
        break;
      case SERVICE_VISIT:
        b.setLastServiceWorkOrder(lc.getWorkOrder()).setLastServiceMs(at);
        break;
      case RECALL_ISSUED:
        b.addOpenRecalls(lc.getRecallId());
        break;
      case RECALL_COMPLETED:
        {
          List<String> open = new ArrayList<>(b.getOpenRecallsList());
          open.remove(lc.getRecallId());
          b.clearOpenRecalls().addAllOpenRecalls(open);
          break;
        }
      case DECOMMISSIONED:
        b.setStage(Stage.DECOMMISSIONED);
        break;
      default:
        break; // BUILD_STEP_COMPLETED, WARRANTY_CLAIM: counted only
    }
    return true;
  }
}
