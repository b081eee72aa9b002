#!/bin/bash
# adwatch-detector image entrypoint: the Deployment's command and Spark's Kubernetes contract.
#
#   run | backtest | --flags   adwatch-detector (local[N] unless Spark's config says otherwise)
#   driver ARGS...             spark-operator's driver pod: spark-submit in client mode inside
#                              the pod, ARGS = --properties-file ... <main file> <args>
#   executor                   an executor pod: KubernetesExecutorBackend with the SPARK_* env
#                              the driver sets (SPARK_DRIVER_URL, SPARK_EXECUTOR_ID, ...)
#   anything else              run as given (spark-class, bash, ...)
#
# Modelled on apache/spark-docker's entrypoint.sh; tini is PID 1 and forwards SIGTERM.
set -eo pipefail

: "${SPARK_HOME:?SPARK_HOME must point at the pyspark package directory}"
if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME=$(java -XshowSettings:properties -version 2>&1 >/dev/null | awk '/java.home/ {print $3}')
  export JAVA_HOME
fi

SPARK_CLASSPATH="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}${SPARK_HOME}/jars/*"
# The driver hands executors their JVM options as SPARK_JAVA_OPT_0..N: in numeric order, as
# Spark's own entrypoint does (`sort -t_ -k4 -n`), not bash's alphabetical 0, 1, 10, 11, 2.
SPARK_EXECUTOR_JAVA_OPTS=()
while IFS= read -r v; do
  if [ -n "$v" ]; then SPARK_EXECUTOR_JAVA_OPTS+=("${!v}"); fi
done < <(printf '%s\n' "${!SPARK_JAVA_OPT_@}" | sort -t_ -k4 -n)
[ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && SPARK_CLASSPATH="$SPARK_CLASSPATH:$SPARK_EXTRA_CLASSPATH"
[ -n "${HADOOP_CONF_DIR:-}" ] && SPARK_CLASSPATH="$HADOOP_CONF_DIR:$SPARK_CLASSPATH"
if [ -n "${SPARK_CONF_DIR:-}" ]; then
  SPARK_CLASSPATH="$SPARK_CONF_DIR:$SPARK_CLASSPATH"
else
  SPARK_CLASSPATH="$SPARK_HOME/conf:$SPARK_CLASSPATH"
fi
SPARK_CLASSPATH="$SPARK_CLASSPATH:$PWD"  # SPARK-43540
export PYSPARK_PYTHON PYSPARK_DRIVER_PYTHON

case "${1:-run}" in
  driver)
    shift 1
    CMD=("$SPARK_HOME/bin/spark-submit")
    # spark-operator sets SPARK_DRIVER_BIND_ADDRESS to the pod IP; elsewhere Spark picks the address
    if [ -n "${SPARK_DRIVER_BIND_ADDRESS:-}" ]; then
      CMD+=(--conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS"
            --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS")
    fi
    CMD+=(--deploy-mode client "$@")
    exec /usr/bin/tini -s -- "${CMD[@]}"
    ;;
  executor)
    shift 1
    CMD=(
      "${JAVA_HOME}/bin/java"
      "${SPARK_EXECUTOR_JAVA_OPTS[@]}"
      -Xms"$SPARK_EXECUTOR_MEMORY"
      -Xmx"$SPARK_EXECUTOR_MEMORY"
      -cp "$SPARK_CLASSPATH${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
      --driver-url "$SPARK_DRIVER_URL"
      --executor-id "$SPARK_EXECUTOR_ID"
      --cores "$SPARK_EXECUTOR_CORES"
      --app-id "$SPARK_APPLICATION_ID"
      --hostname "$SPARK_EXECUTOR_POD_IP"
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
      --podName "${SPARK_EXECUTOR_POD_NAME:-}"
    )
    exec /usr/bin/tini -s -- "${CMD[@]}"
    ;;
  run | backtest | -*)
    exec /usr/bin/tini -s -- adwatch-detector "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
