#!/bin/bash
# Add Spark connector jars to the image at build time: SPARK_CONNECTORS=none | kafka | s3 | kafka,s3.
#
# none (the default here): the detector reads Kafka with its Python Data Source reader
# (ADWATCH_DETECTOR_SOURCE=python); no jar is added. kafka: spark-sql-kafka-0-10 and its
# dependencies; s3: hadoop-aws (s3a:// checkpoints). Jars are resolved by Spark's own Ivy
# (spark-submit --packages) from Maven Central, or from a local Maven/Ivy mirror given as
# SPARK_JARS_REPOSITORIES. Asking for a connector that cannot be had fails the build.
set -euo pipefail
CONNECTORS=${1:-${SPARK_CONNECTORS:-none}}
[ "$CONNECTORS" = none ] || [ -z "$CONNECTORS" ] && { echo "spark-connectors: none (Python Data Source reader)"; exit 0; }

SPARK_VERSION=$(python3 -c 'import pyspark; print(pyspark.__version__)')
SCALA=2.13
HADOOP_VERSION=$(ls "$SPARK_HOME/jars" | sed -n 's/^hadoop-client-api-\(.*\)\.jar$/\1/p')
packages=() expect=()
IFS=, read -ra wanted <<<"$CONNECTORS"
for c in "${wanted[@]}"; do
  case "$c" in
    kafka) packages+=("org.apache.spark:spark-sql-kafka-0-10_${SCALA}:${SPARK_VERSION}")
           expect+=("spark-sql-kafka-0-10_${SCALA}-${SPARK_VERSION}.jar") ;;
    s3) packages+=("org.apache.hadoop:hadoop-aws:${HADOOP_VERSION}")
        expect+=("hadoop-aws-${HADOOP_VERSION}.jar") ;;
    *) echo "spark-connectors: unknown connector '$c' (kafka, s3)" >&2; exit 1 ;;
  esac
done
ivy=$(mktemp -d)
repos=()
[ -n "${SPARK_JARS_REPOSITORIES:-}" ] && repos=(--repositories "$SPARK_JARS_REPOSITORIES")
echo "spark-connectors: resolving ${packages[*]}"
# spark-submit resolves --packages before it looks at the application: an empty script suffices
echo 'pass' >"$ivy/noop.py"
"$SPARK_HOME/bin/spark-submit" --master 'local[1]' --conf "spark.jars.ivy=$ivy" \
  --packages "$(IFS=,; echo "${packages[*]}")" "${repos[@]}" "$ivy/noop.py"
for jar in "$ivy"/jars/*.jar; do
  [ -e "$SPARK_HOME/jars/$(basename "$jar")" ] || cp "$jar" "$SPARK_HOME/jars/"
done
rm -rf "$ivy"
for jar in "${expect[@]}"; do
  [ -f "$SPARK_HOME/jars/$jar" ] || { echo "spark-connectors: $jar missing after resolution" >&2; exit 1; }
done
echo "spark-connectors: added ${expect[*]}"
