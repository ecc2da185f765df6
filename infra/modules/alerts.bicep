// Alerts to the operator: messages moved to a poison queue, messages the workers recorded as failures without
// retrying (permanent or malformed), and failed function invocations.

param location string
param tags object
param resourceToken string
param appInsightsId string

@description('Where alerts are emailed; empty sends them nowhere but the Azure portal.')
param alertEmail string

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'enrollio'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Azure Monitor's QueueMessageCount is per account, hourly, with no queue dimension, so it cannot tell a
// poison queue from a busy one. Instead count the host's own warning each time it moves a message after
// maxDequeueCount (host.json) failed attempts: every increase of a poison queue's depth, split by queue.
var poisonQuery = '''
traces
| where message startswith "Message has reached MaxDequeueCount"
| extend queueName = extract(@"Moving message to queue '([^']+)'", 1, message)
| summarize poisoned = count() by queueName
'''

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-poison-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Messages moved to a poison queue'
    description: 'A queue message failed maxDequeueCount times and now sits in <queue>-poison. See "When an alert fires" in README.md, Deploy to Azure.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'poisoned'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'queueName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}

// Every function invocation is a request in Application Insights; host.json keeps requests out of sampling,
// so this count is exact.
var failuresQuery = '''
requests
| where success == false
| summarize failures = count() by functionName = operation_Name
'''

resource failuresAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-failures-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Function invocations failed'
    description: 'A function raised an error. Queue-triggered ones are retried by the host until maxDequeueCount.'
    severity: 3
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: failuresQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'functionName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}

// A worker that meets a permanent or malformed message records it in the Failures table at once and logs one
// error line ("<queue>: recorded as failure <row>: <kind>: <reason>", sync_core/failures.py); the invocation
// succeeds, so neither alert above sees it.
var recordedQuery = '''
traces
| where severityLevel >= 3 and message has ": recorded as failure "
| extend queueName = extract(@"^([a-z0-9-]+): recorded as failure", 1, message)
| summarize recorded = count() by queueName
'''

resource recordedAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-recorded-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Queue messages recorded as failures'
    description: 'A worker gave up on a message without retrying it (Graph refused it for good, or it could not be read); the Failures table says why. See "When an alert fires" in README.md, Deploy to Azure.'
    severity: 3
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: recordedQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'recorded'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [
            {
              name: 'queueName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}
