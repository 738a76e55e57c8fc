// The types a generated dashboard must satisfy, from @grafana/schema (Grafana's own types).
// tools/grafana_schema.py copies this file into each version folder (v10.4, v11.2, v13.2), so
// '@grafana/schema' resolves to that folder's pinned version, appends the dashboard JSON as
// `const … : TypedDashboard = {…}` and runs tsc: an unknown key, a wrong type or a value
// outside an enum anywhere in the dashboard is a compile error.
import type * as schema from '@grafana/schema';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as Text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** JSON spells an enum member by its value: accept the values ("list"), keep the rest strict. */
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends readonly (infer U)[]
      ? Json<U>[]
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/** Grafana merges a panel's options into its plugin's defaults, so any option may be left
 * out; those given must exist and have the right type. */
type DeepPartial<T> = T extends readonly (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

/** Grafana's Prometheus query (PrometheusDataQuery in @grafana/schema 10.4; later versions
 * moved it into the data source plugin, so it is spelled out here). */
interface PrometheusQuery extends schema.DataQuery {
  editorMode?: 'code' | 'builder';
  exemplar?: boolean;
  expr: string;
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  interval?: string;
  legendFormat?: string;
  range?: boolean;
}

/** A Prometheus annotation: the query in `target`, how to title and tag the events beside it
 * (the Prometheus data source's annotation editor fields). */
interface PrometheusAnnotation extends Omit<schema.AnnotationQuery<PrometheusQuery>, 'target'> {
  target?: PrometheusQuery;
  tagKeys?: string;
  textFormat?: string;
  titleFormat?: string;
  useValueForTime?: boolean;
}

/** A panel of one visualisation: its own options and custom field config, Prometheus queries. */
type PanelOf<Kind extends string, Options, Custom> =
  Omit<schema.Panel<Options, Custom>, 'type' | 'options' | 'targets' | 'fieldConfig'> & {
    type: Kind;
    options: DeepPartial<Options>;
    targets?: PrometheusQuery[];
    fieldConfig: schema.FieldConfigSource<Custom>;
  };

type TypedPanel =
  | PanelOf<'bargauge', BarGauge.Options, Record<string, never>>
  | PanelOf<'heatmap', Heatmap.Options, Heatmap.FieldConfig>
  | PanelOf<'stat', Stat.Options, Record<string, never>>
  | PanelOf<'text', Text.Options, Record<string, never>>
  | PanelOf<'timeseries', TimeSeries.Options, TimeSeries.FieldConfig>
  | (Omit<schema.RowPanel, 'type'> & { type: 'row' });

export type TypedDashboard = Json<
  Omit<schema.Dashboard, 'panels' | 'annotations'> & {
    panels: TypedPanel[];
    annotations: { list: (schema.AnnotationQuery | PrometheusAnnotation)[] };
  }
>;
